"""Revoke-to-deny benchmark: RunShare deleted -> the gate answers 403, through a real oauth2-proxy.

    python -m benchmarks.revoke_latency --rounds 20 [--runs 10000]

starts a local control plane, the operator (its own process, admission webhooks on loopback), the
dev OIDC issuer, oauth2-proxy and the gate, creates one ToolRun owned by alice, then for each round
shares it with bob and deletes the share, polling the gate's /check as bob every few milliseconds.
Reports share-to-allow and revoke-to-deny latency (p50/p95/max), and the latency of one /check
(which always asks oauth2-proxy) while idle. Numbers are printed as JSON. With --runs N, N other
runs, each shared with bob, exist first (so the operator and the gate hold N Ingresses).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import kubernetes

from benchmarks.router_revoke import Asker, create_share, start_operator, summary
from toolshare.local import services as devservices
from toolshare.local.controlplane import cluster
from toolshare.local.controlplane.binaries import ensure_binaries
from toolshare.local.dev import install_crds
from toolshare.local.issuer import DevIssuer

NS, RUN = "bench-gate", "nb"
GROUP, VERSION = "toolshare.dev", "v1alpha1"


def wait_status(asker: Asker, want: int, timeout: float = 30.0, interval: float = 0.005) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if asker.status() == want:
            return time.monotonic() - started
        time.sleep(interval)
    raise TimeoutError(f"{asker.path} did not answer {want} within {timeout}s")


def background_runs(kubeconfig: Path, n: int) -> float:
    """N runs shared with bob in another namespace, through the webhooks; seconds until synced."""
    import asyncio

    from benchmarks.kclient import KClient
    from benchmarks.propagation import create_runs, wait_ingresses, wait_webhooks

    async def go() -> float:
        async with KClient(str(kubeconfig)) as k:
            await wait_webhooks(k)
            started = time.monotonic()
            await create_runs(k, n)
            await wait_ingresses(k, n, timeout=3600)
            return time.monotonic() - started

    return asyncio.run(go())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--idle-checks", type=int, default=500)
    parser.add_argument("--runs", type=int, default=0, help="other runs (each shared) that exist meanwhile")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="toolshare-bench-gate-"))
    bins = ensure_binaries()
    state = cluster.up(work / "cluster", bins, log=lambda *_: None)
    kubeconfig = state.directory / "kubeconfig"
    procs: list = []
    operator = None
    issuer = DevIssuer().start()
    try:
        install_crds(bins, kubeconfig)
        operator = start_operator(kubeconfig, work / "operator.log")
        proxy = devservices.oauth2_proxy(issuer.url, work).start()
        gate = devservices.gate(kubeconfig, f"{proxy.url}/oauth2/auth", work).start()
        procs = [proxy, gate]
        background = round(background_runs(kubeconfig, args.runs), 1) if args.runs else 0.0
        client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        kubernetes.client.CoreV1Api(client).create_namespace({"metadata": {"name": NS}})
        api = kubernetes.client.CustomObjectsApi(client)
        api.create_namespaced_custom_object(GROUP, VERSION, NS, "toolruns", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ToolRun", "metadata": {"name": RUN},
            "spec": {"owner": "alice", "image": "img", "endpoints": [{"name": "lab", "port": 8888, "protocol": "http"}]}})
        path = f"/check/{NS}/{RUN}/lab"
        bob = Asker(gate.url, path, issuer.token("bob"))
        alice = Asker(gate.url, path, issuer.token("alice"))
        wait_status(alice, 202, timeout=60)

        idle = []
        for _ in range(args.idle_checks):
            t = time.monotonic()
            alice.status()
            idle.append(time.monotonic() - t)

        allow, deny = [], []
        for i in range(args.rounds):
            name = f"bob-{i}"
            t = time.monotonic()  # from sending the create to the gate's first 202
            create_share(api, NS, RUN, name)
            wait_status(bob, 202)
            allow.append(time.monotonic() - t)
            t = time.monotonic()  # from sending the delete to the gate's first 403
            api.delete_namespaced_custom_object(GROUP, VERSION, NS, "runshares", name)
            wait_status(bob, 403)
            deny.append(time.monotonic() - t)
        result = {
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, python {platform.python_version()}",
            "rounds": args.rounds,
            "other_runs": args.runs, "other_runs_create_and_sync_seconds": background,
            "revoke_to_deny": summary(deny),
            "share_to_allow": summary(allow),
            "check_latency_idle": summary(idle),
        }
        print(json.dumps(result, indent=2))
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(30)
        for svc in reversed(procs):
            svc.stop()
        issuer.stop()
        cluster.down(state.directory, log=lambda *_: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
