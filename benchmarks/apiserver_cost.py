"""What each kind of write costs the API server: CPU seconds of kube-apiserver and etcd per request.

    python -m benchmarks.apiserver_cost --objects 500 --writes 2000

On this 2-core machine the API server shares the cores with the operator, so its cost per share
change bounds the changes/s any operator can sustain. This starts a local control plane, makes
OBJECTS Ingresses, ToolRuns and RunShares, then sends WRITES requests of each shape the operator
(or the benchmark) makes, 16 at a time, and reports the control plane's CPU per 1,000 requests.
No operator and no admission webhooks run here: the webhook round trip is measured by
benchmarks.propagation (webhook_call_mean_ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.kclient import KClient
from benchmarks.propagation import control_plane_cpu, say
from toolshare.local.controlplane import cluster
from toolshare.local.controlplane.binaries import ensure_binaries
from toolshare.local.dev import install_crds

NS = "cost"
TR = f"/apis/toolshare.dev/v1alpha1/namespaces/{NS}/toolruns"
RS = f"/apis/toolshare.dev/v1alpha1/namespaces/{NS}/runshares"
ING = f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses"
MERGE, APPLY = "application/merge-patch+json", "application/apply-patch+yaml"


def ingress(i: int, users: str) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": f"r{i}", "namespace": NS, "labels": {"app.kubernetes.io/managed-by": "toolshare"},
                         "annotations": {"toolshare.dev/allowed-users": users,
                                         "nginx.ingress.kubernetes.io/auth-url": "http://gate.toolshare.svc/check"}},
            "spec": {"ingressClassName": "nginx", "rules": [{"host": f"r{i}.example.test", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": f"r{i}", "port": {"number": 8888}}}}]}}]}}


async def burst(k: KClient, n: int, objects: int, one) -> None:
    sem = asyncio.Semaphore(16)

    async def go(i: int):
        async with sem:
            await one(i % objects, i)

    await asyncio.gather(*(go(i) for i in range(n)))


async def measure(k: KClient, state, n: int, objects: int, name: str, one) -> dict:
    cpu0, t0 = control_plane_cpu(state), time.monotonic()
    await burst(k, n, objects, one)
    seconds = time.monotonic() - t0
    cpu = {c: v - cpu0[c] for c, v in control_plane_cpu(state).items()}
    say(f"{name}: {n} in {seconds:.1f}s")
    return {"requests_per_s": round(n / seconds, 1),
            **{f"{c}_cpu_ms_per_request": round(v / n * 1000, 2) for c, v in cpu.items()}}


async def bench(objects: int, writes: int) -> dict:
    directory = Path(tempfile.mkdtemp(prefix="toolshare-bench-"))
    bins = ensure_binaries()
    state = cluster.up(directory, bins, log=lambda *_: None)
    install_crds(bins, directory / "kubeconfig")
    out: dict = {}
    try:
        async with KClient(str(directory / "kubeconfig")) as k:
            await k.request("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
            run = {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun",
                   "spec": {"owner": "alice", "image": "jupyter/base-notebook",
                            "endpoints": [{"name": "lab", "port": 8888, "protocol": "http"}]}}
            share = {"apiVersion": "toolshare.dev/v1alpha1", "kind": "RunShare", "spec": {"users": ["bob"]}}

            async def make(i, _):
                await k.request("POST", ING, ingress(i, "bob"))
                await k.request("POST", TR, {**run, "metadata": {"name": f"r{i}"}})
                await k.request("POST", RS, {**share, "metadata": {"name": f"r{i}"},
                                             "spec": {**share["spec"], "runRef": {"name": f"r{i}"}}})

            await burst(k, objects, objects, make)
            out["Ingress server-side apply (whole object)"] = await measure(
                k, state, writes, objects, "apply",
                lambda i, j: k.request("PATCH", f"{ING}/r{i}", ingress(i, f"bob,a{j}"), APPLY,
                                       params={"fieldManager": "toolshare", "force": "true"}))
            out["Ingress merge patch (one annotation)"] = await measure(
                k, state, writes, objects, "merge",
                lambda i, j: k.request("PATCH", f"{ING}/r{i}", {"metadata": {"annotations": {
                    "toolshare.dev/allowed-users": f"bob,m{j}"}}}, MERGE))
            out["ToolRun status merge patch"] = await measure(
                k, state, writes, objects, "status",
                lambda i, j: k.request("PATCH", f"{TR}/r{i}/status", {"status": {"sharedWith": {
                    "users": ["bob", f"s{j}"], "groups": [], "summary": f"bob, s{j}"}}}, MERGE))
            out["RunShare spec merge patch (no webhooks)"] = await measure(
                k, state, writes, objects, "share",
                lambda i, j: k.request("PATCH", f"{RS}/r{i}", {"spec": {"users": ["bob", f"u{j}"]}}, MERGE))
    finally:
        cluster.down(directory, log=lambda *_: None)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objects", type=int, default=500)
    p.add_argument("--writes", type=int, default=2000)
    a = p.parse_args(argv)
    print(json.dumps(asyncio.run(bench(a.objects, a.writes)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
