"""Revoke-to-close through the run's guard, on the local node, through Traefik.

    python -m benchmarks.revoke_close --connections 1 --connections 100 --connections 1000

starts the local cluster with its node (root, like `make run`), oauth2-proxy, a gate that signs
grants and listens on the node's address (the guards in the Pods follow it), Traefik and a guarding
operator (TOOLSHARE_GUARD_IMAGE: the Toolshare image built here), launches one tool (Tornado's
websocket echo, tools.WEB) owned by alice, and for each N: shares it with bob, opens N websockets
as bob and one as alice through Traefik, deletes the share and times, for each of bob's
connections, from sending the DELETE to receiving the guard's close frame (1008). Alice's must
still answer afterwards. Also: the guard container's memory (the kubelet's summary API) idle and
with the connections open, and the latency of one GET straight to the guard's port (with a grant
the benchmark signs with the gate's key) against the same GET straight to the tool's port: what
the guard adds per request. Numbers are printed as JSON.

    python -m benchmarks.revoke_close --runs 10000 --connections 1 --connections 100 --rounds 5

first creates N other runs, each shared with bob, in another namespace (their Pods pinned to no
node, as benchmarks.router_revoke does), and waits until every one of their Ingresses lists bob:
the operator, the gate and Traefik then hold N more runs while the websockets are closed. Each
connection count is measured `--rounds` times (a new share each round).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import kubernetes

from benchmarks.router_revoke import (NS, Asker, admitting, background, latency, peak_rss_mb, pod_ip, route_host,
                                      start_operator, stop, summary, wait)
from toolshare import grant
from toolshare.local import services as devservices
from toolshare.local.controlplane import cluster, node as nodemod
from toolshare.local.controlplane.binaries import ensure_binaries
from toolshare.local.dev import install_crds
from toolshare.local.images import catalog
from toolshare.local.issuer import DevIssuer
from toolshare.local.tools import WEB
from toolshare.local.traefik import Traefik
from toolshare.render.guard import GUARD_CONTAINER, guard_ports

GROUP, VERSION = "toolshare.dev", "v1alpha1"
RUN = "ws"


def guard_memory(client, node: str) -> int | None:
    """The guard container's working set (bytes), from the kubelet's summary API."""
    summary_ = json.loads(kubernetes.client.CoreV1Api(client).connect_get_node_proxy_with_path(
        node, "stats/summary", _preload_content=False).data)
    for pod in summary_.get("pods", []):
        if pod["podRef"]["namespace"] == NS and pod["podRef"]["name"] == RUN:
            for c in pod.get("containers", []):
                if c["name"] == GUARD_CONTAINER:
                    return (c.get("memory") or {}).get("workingSetBytes")
    return None


def denied_at(asker: Asker, timeout: float = 60.0) -> float:
    """When `asker` first got 403, polling every 2 ms."""
    deadline = time.monotonic() + timeout
    while asker.status() != 403:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gate did not deny within {timeout:.0f}s")
        time.sleep(0.002)
    return time.monotonic()


async def one_round(url: str, host: str, tokens: dict[str, str], n: int, api, share: str, memory,
                    gate_check: Asker) -> tuple[dict, list[float], float]:
    """Bob's N websockets closed by a revoke, each timed from the DELETE; the floor is the gate's
    own /check for bob turning 403, polled (every 2 ms) in the same round. Returns the round's
    summary, each close's seconds after the DELETE, and the gate's."""
    headers = {p: {"Host": host, "Authorization": f"Bearer {t}"} for p, t in tokens.items()}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as http:
        alice = await http.ws_connect(f"{url}/lab/ws", headers=headers["alice"])
        bobs: list = []
        while len(bobs) < n:  # in batches: each one is a forwardAuth round trip to the gate and oauth2-proxy
            batch = min(50, n - len(bobs))
            bobs += await asyncio.gather(*(http.ws_connect(f"{url}/lab/ws", headers=headers["bob"])
                                           for _ in range(batch)))
            print(f"  {len(bobs)} of bob's websockets open", file=sys.stderr, flush=True)
        for ws in bobs[:3]:
            await ws.send_str("hi")
            assert (await ws.receive(timeout=10)).data == "bob: hi"
        memory_open = await asyncio.to_thread(memory)

        async def closed(ws) -> float:
            msg = await ws.receive(timeout=60)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.POLICY_VIOLATION, msg
            return time.monotonic()

        waiters = [asyncio.create_task(closed(ws)) for ws in bobs]
        assert gate_check.status() == 202
        await asyncio.sleep(0)
        sent = time.monotonic()
        floor = asyncio.create_task(asyncio.to_thread(denied_at, gate_check))
        await asyncio.to_thread(api.delete_namespaced_custom_object, GROUP, VERSION, NS, "runshares", share)
        ends = await asyncio.gather(*waiters)
        gate_denied = await floor
        await alice.send_str("still")
        assert (await alice.receive(timeout=10)).data == "alice: still"
        await alice.close()
        return {"connections": n, "revoke_to_close": summary([e - sent for e in ends]),
                "revoke_to_gate_403_ms": round((gate_denied - sent) * 1000, 1),
                "guard_memory_open_bytes": memory_open}, [e - sent for e in ends], gate_denied - sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, action="append", help="open connections per round (repeatable)")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--runs", type=int, default=0, help="other runs shared with bob, held meanwhile")
    parser.add_argument("--rounds", type=int, default=1, help="rounds per connection count")
    args = parser.parse_args()
    counts = args.connections or [1, 100, 1000]

    work = Path(tempfile.mkdtemp(prefix="toolshare-bench-guard-"))
    bins = ensure_binaries()
    state = cluster.up(work / "cluster", bins, log=lambda *_: None, node=True)
    cluster.import_images(state.directory, (catalog.TOOLSHARE,), log=lambda *_: None)
    kubeconfig = state.directory / "kubeconfig"
    services: list = []
    router = operator = None
    issuer = DevIssuer().start()
    key = grant.new_key()
    (work / "grant.pem").write_bytes(grant.private_pem(key))
    try:
        install_crds(bins, kubeconfig)
        client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        proxy = devservices.oauth2_proxy(issuer.url, work).start()
        gate = devservices.gate(kubeconfig, f"{proxy.url}/oauth2/auth", work, host=nodemod.node_ip(),
                                grant_key=work / "grant.pem").start()
        services = [proxy, gate]
        router = Traefik(work / "traefik", client).start()
        operator = start_operator(kubeconfig, work / "operator.log", {
            "TOOLSHARE_GATE_URL": gate.url, "TOOLSHARE_GUARD_IMAGE": catalog.TOOLSHARE,
            "TOOLSHARE_GRANT_PUBLIC_KEY": grant.public_text(key)})
        admitting(kubeconfig)
        kubernetes.client.CoreV1Api(client).create_namespace({"metadata": {"name": NS}})
        api = kubernetes.client.CustomObjectsApi(client)
        run = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ToolRun", "metadata": {"name": RUN},
               "spec": {"owner": "alice", "image": catalog.JUPYTERLAB, "command": ["python3", "-c", WEB, RUN, "8888"],
                        "endpoints": [{"name": "lab", "port": 8888, "protocol": "http", "path": "/lab"}]}}
        api.create_namespaced_custom_object(GROUP, VERSION, NS, "toolruns", run)
        synced = background(kubeconfig, args.runs, "ingress", create=True) if args.runs else None
        host = wait(lambda: route_host(client, "ingress", RUN), 120, "the run's Ingress")
        ip = wait(lambda: pod_ip(client, RUN), 300, "the run's Pod ready (tool and guard)")
        node = kubernetes.client.CoreV1Api(client).list_node().items[0].metadata.name
        tokens = {p: issuer.token(p) for p in ("alice", "bob")}

        # What the guard adds to one request: straight to the guard's port with a grant, against
        # straight to the tool's port (both from this machine, no router, no gate).
        port = guard_ports(run)["lab"]
        token = grant.make(key, NS, RUN, "lab", "alice", (), time.time(), ttl=3600)
        through_guard = Asker(f"http://{ip}:{port}", "/lab/x", None)
        through_guard.headers = {grant.HEADER: token}
        straight = Asker(f"http://{ip}:8888", "/lab/x", None)
        wait(lambda: through_guard.status() == 200, 60, "the guard answering with a grant")
        result: dict = {
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, python {platform.python_version()}",
            "request_latency": {"through_guard": summary(latency(through_guard, args.requests)),
                                "tool_straight": summary(latency(straight, args.requests))},
            "other_runs": args.runs, "other_runs_synced_s": round(synced, 1) if synced is not None else None,
            "guard_memory_idle_bytes": guard_memory(client, node), "rounds": []}
        closed_after: dict[int, list[float]] = {}  # connections -> every close, seconds after its DELETE
        denied_after: dict[int, list[float]] = {}  # connections -> the gate's 403 per round, likewise
        for i, n in enumerate(c for c in counts for _ in range(args.rounds)):
            share = f"bob-{i}"
            api.create_namespaced_custom_object(GROUP, VERSION, NS, "runshares", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "RunShare", "metadata": {"name": share},
                "spec": {"runRef": {"name": RUN}, "users": ["bob"]}})
            bob = Asker(router.url, "/lab/x", tokens["bob"], host)
            wait(lambda: bob.status() == 200, 60, "bob let in")

            print(f"round {i + 1}: {n} connection(s)", file=sys.stderr, flush=True)
            outcome, closes, denied = asyncio.run(one_round(router.url, host, tokens, n, api, share, lambda: guard_memory(client, node),
                                            Asker(gate.url, f"/check/{NS}/{RUN}/lab", tokens["bob"])))
            outcome["guard_memory_after_bytes"] = guard_memory(client, node)
            result["rounds"].append(outcome)
            closed_after.setdefault(n, []).extend(closes)
            denied_after.setdefault(n, []).append(denied)
        result["revoke_to_close_by_connections"] = {n: summary(v) for n, v in closed_after.items()}
        result["revoke_to_gate_403_by_connections"] = {n: summary(v) for n, v in denied_after.items()}
        result["peak_rss_mb"] = {"operator": peak_rss_mb(operator.pid), "gate": peak_rss_mb(gate.proc.pid)}
        print(json.dumps(result, indent=2))
    finally:
        if operator is not None:
            stop(operator)
        if router is not None:
            router.stop()
        for svc in reversed(services):
            svc.stop()
        issuer.stop()
        cluster.down(state.directory, log=lambda *_: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
