"""Gate throughput: requests/s and latency of /check under load from a second process (wrk).

    python -m benchmarks.gate_throughput --seconds 10 --connections 16 [--runs 10000]

Three measurements on the same machine, same run:
- gate + oauth2-proxy: the production path (every /check asks oauth2-proxy /oauth2/auth);
- oauth2-proxy alone: /oauth2/auth with the same bearer token (what the gate waits on);
- gate alone: the gate in front of a trivial identity endpoint answering 202 with bob's headers,
  so the gate's own cost shows (a benchmark stand-in only; the product never trusts it).
The gate decides from ToolRuns and RunShares created directly on a local control plane (no
operator): --runs runs, each shared with bob by its owner; the one asked about is among them.
Also reports the gate's resident memory once it holds them all. Needs wrk (Debian package `wrk`).

With --page, also the Toolshare page of alice, who owns every run: its first page, its last page
and a search, through gate + oauth2-proxy, each against /check (the floor) in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kubernetes
from aiohttp import web

from toolshare.local import services as devservices
from toolshare.local.controlplane import cluster
from toolshare.local.controlplane.binaries import ensure_binaries
from toolshare.local.controlplane.cluster import free_port
from toolshare.local.dev import install_crds
from toolshare.local.issuer import DevIssuer

NS, RUN, EP = "bench-gate", "nb", "lab"


def run_and_share(i: int) -> tuple[dict, dict]:
    """Run i owned by alice and its RunShare to bob, as admission would have stamped it."""
    name = RUN if i == 0 else f"{RUN}-{i}"
    run = {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun", "metadata": {"name": name, "namespace": NS},
           "spec": {"owner": "alice", "image": "registry.example.org/nb:1",
                    "endpoints": [{"name": EP, "port": 8888, "protocol": "http"}]}}
    share = {"apiVersion": "toolshare.dev/v1alpha1", "kind": "RunShare",
             "metadata": {"name": f"{name}-bob", "namespace": NS,
                          "annotations": {"toolshare.dev/shared-by": "alice", "toolshare.dev/shared-by-groups": ""}},
             "spec": {"runRef": {"name": name}, "users": ["bob"]}}
    return run, share


def create_runs(api, count: int) -> float:
    """`count` runs and shares created 8 at a time; seconds taken."""
    custom = kubernetes.client.CustomObjectsApi(api)

    def create(i: int) -> None:
        run, share = run_and_share(i)
        custom.create_namespaced_custom_object("toolshare.dev", "v1alpha1", NS, "toolruns", run)
        custom.create_namespaced_custom_object("toolshare.dev", "v1alpha1", NS, "runshares", share)

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(count)))
    return time.monotonic() - started


def wait_holding(gate, runs: int, timeout: float = 600) -> float:
    """Until the gate's /readyz says it holds `runs` runs; seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            with urllib.request.urlopen(f"{gate.ops_url}/readyz", timeout=5) as r:
                if r.read().decode().startswith(f"ok: {runs} runs"):
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the gate did not hold {runs} runs within {timeout}s")


def rss_mb(service) -> float:
    status = Path(f"/proc/{service.proc.pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024


def identity_standin(port: int) -> None:
    """An identity endpoint that says 'bob' to everyone: isolates the gate's own cost."""
    claims = {"preferred_username": "bob", "email": "bob@toolshare.test", "groups": ["lab"]}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    token = f"e30.{payload}.c2ln"  # oauth2-proxy's answer carries the ID token it verified

    async def auth(_request):
        return web.Response(status=202, headers={"Authorization": f"Bearer {token}"})

    app = web.Application()
    app.router.add_get("/oauth2/auth", auth)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    loop.run_forever()


def wrk(url: str, token: str, seconds: int, connections: int) -> dict:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                          "-H", f"Authorization: Bearer {token}", url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests_per_s": round(rps), "p50": lat.get("50"), "p90": lat.get("90"), "p99": lat.get("99"),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--runs", type=int, default=1, help="ToolRuns (each shared with bob) the gate holds")
    p.add_argument("--page", action="store_true", help="also time alice's page (she owns every run)")
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    directory = Path(tempfile.mkdtemp(prefix="toolshare-bench-gate-tp-"))
    bins = ensure_binaries()
    cluster.up(directory, bins, log=lambda *_: None)
    kubeconfig = directory / "kubeconfig"
    install_crds(bins, kubeconfig)  # the gate also watches RunShares (for "Shared with me")
    services = []
    try:
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
        created_in = create_runs(api, args.runs)
        issuer = DevIssuer().start()
        token = issuer.token("bob")
        proxy = devservices.oauth2_proxy(issuer.url, directory).start()
        gate = devservices.gate(kubeconfig, f"{proxy.url}/oauth2/auth", directory).start()
        standin_port = free_port()
        threading.Thread(target=identity_standin, args=(standin_port,), daemon=True).start()
        bare = devservices.gate(kubeconfig, f"http://127.0.0.1:{standin_port}/oauth2/auth", directory).start()
        services = [gate, bare, proxy]
        synced_in = wait_holding(gate, args.runs)
        wait_holding(bare, args.runs)
        check = f"/check/{NS}/{RUN}/{EP}"
        wrk(gate.url + check, token, 2, args.connections)  # warm-up
        result = {
            "connections": args.connections, "seconds": args.seconds, "cores": os.cpu_count(), "runs": args.runs,
            "runs_created_in_s": round(created_in, 1), "gate_synced_in_s": round(synced_in, 1),
            "gate_rss_mb": round(rss_mb(gate), 1),
            "gate_with_oauth2_proxy": wrk(gate.url + check, token, args.seconds, args.connections),
            "oauth2_proxy_alone": wrk(f"{proxy.url}/oauth2/auth", token, args.seconds, args.connections),
            "gate_alone": wrk(bare.url + check, token, args.seconds, args.connections),
        }
        if args.page:
            alice = issuer.token("alice")
            last = -(-args.runs // 20)
            for name, path in (("page_first", "/"), ("page_last", f"/?page={last}"),
                               ("page_search", f"/?q={RUN}-{args.runs // 2}")):
                result[name] = wrk(gate.url + path, alice, args.seconds, args.connections)
            result["page_floor_check"] = wrk(gate.url + check, token, args.seconds, args.connections)
        print(json.dumps(result, indent=2))
    finally:
        for s in services:
            s.stop()
        cluster.down(directory, log=lambda *_: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
