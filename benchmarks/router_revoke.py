"""Revoke-to-deny through each real router: Traefik reading Ingresses, Traefik reading HTTPRoutes.

    python -m benchmarks.router_revoke --rounds 20

starts the local cluster with its node (needs root, like `make run`), the dev OIDC issuer,
oauth2-proxy, the gate and Traefik (ingress-nginx, Gateway API and CRD providers), then for each
backend runs the operator in that mode (`ingress`, then `gateway` with Traefik forwardAuth
Middlewares), launches one tool Pod (Python's http.server) owned by alice and, each round, shares it
with bob and deletes the share, polling as bob every few milliseconds both through Traefik (the
run's host) and the gate's /check directly. The gate's own answer is the floor, measured in the
same rounds: a revoke changes no route, so the router adds only its forwardAuth round trip. Also
the latency of one request as alice through the router against the tool straight (its Pod IP).
Numbers are printed as JSON.

    python -m benchmarks.router_revoke --rounds 20 --runs 1000 --backend ingress

first creates N other runs, each shared with bob, in another namespace (their Pods pinned to a node
label no node has, so they stay Pending: the node's 250 Pods would not hold 10,000 tools), and waits
until every one of their routes lists bob: the operator, the gate and Traefik then hold N more runs,
shares and routes while the rounds are timed. Each backend's result ends with the peak resident
memory (VmHWM) of the operator, the gate and Traefik.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import kubernetes

from toolshare.local import services as devservices, traefik as traefikmod
from toolshare.local.controlplane import cluster
from toolshare.local.controlplane.binaries import ensure_binaries
from toolshare.local.controlplane.cluster import free_port
from toolshare.local.dev import install_crds
from toolshare.local.images import catalog
from toolshare.local.issuer import DevIssuer
from toolshare.local.traefik import Traefik

NS = "bench-router"
GROUP, VERSION = "toolshare.dev", "v1alpha1"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def summary(values: list[float]) -> dict:
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "p50_ms": round(pct(ms, 50), 1), "p95_ms": round(pct(ms, 95), 1),
            "p99_ms": round(pct(ms, 99), 1), "max_ms": round(max(ms), 1), "mean_ms": round(statistics.mean(ms), 1)}


class Asker:
    """GET one path as one person over a kept-alive connection (reopened when the peer closes it)."""

    def __init__(self, address: str, path: str, token: str | None, host: str | None = None):
        self.hostname, port = address.split("//", 1)[-1].rsplit(":", 1)
        self.port, self.path = int(port), path
        self.headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **({"Host": host} if host else {})}
        self.conn = http.client.HTTPConnection(self.hostname, self.port, timeout=10)

    def status(self) -> int:
        try:
            self.conn.request("GET", self.path, headers=self.headers)
            resp = self.conn.getresponse()
            resp.read()
            return resp.status
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.hostname, self.port, timeout=10)
            return 0


def until(askers: dict[str, tuple[Asker, int]], timeout: float = 60.0, interval: float = 0.002) -> dict[str, float]:
    """Seconds until each asker first gets its status, polling them in turn."""
    started, seen = time.monotonic(), {}
    while len(seen) < len(askers):
        for name, (asker, want) in askers.items():
            if name not in seen and asker.status() == want:
                seen[name] = time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"no answer as expected from {sorted(set(askers) - set(seen))} within {timeout}s")
        time.sleep(interval)
    return seen


def start_operator(kubeconfig: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "TOOLSHARE_WEBHOOK_LISTEN": f"127.0.0.1:{free_port()}",
           "TOOLSHARE_WEBHOOK_CERT_DIR": str(log.parent / f"webhook-{log.stem}"),
           **cluster.webhook_client_env(kubeconfig.parent), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "toolshare.cli.main", "operator", "--kubeconfig", str(kubeconfig)],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def admitting(kubeconfig: Path) -> None:
    """Until this operator's webhooks answer (after a switch the configurations still name the
    previous operator's port, and every write is refused) and the principals policy joins."""
    import asyncio

    from benchmarks.kclient import KClient
    from benchmarks.propagation import wait_webhooks

    async def go() -> None:
        async with KClient(str(kubeconfig)) as k:
            await wait_webhooks(k)

    asyncio.run(go())


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(30)


def create_share(api: kubernetes.client.CustomObjectsApi, namespace: str, run: str, name: str,
                 timeout: float = 60.0) -> None:
    """Create the share; until the admission webhook is registered a share is not stamped with its
    sharer and is not honoured, so recreate it until it is."""
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RunShare", "metadata": {"name": name},
            "spec": {"runRef": {"name": run}, "users": ["bob"]}}
    deadline = time.monotonic() + timeout
    while True:
        obj = api.create_namespaced_custom_object(GROUP, VERSION, namespace, "runshares", body)
        if "toolshare.dev/shared-by" in (obj["metadata"].get("annotations") or {}) or time.monotonic() > deadline:
            return
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, "runshares", name)
        time.sleep(0.5)


def route_host(client, backend: str, run: str) -> str | None:
    selector = f"toolshare.dev/run={run},toolshare.dev/endpoint=lab"
    if backend == "ingress":
        items = kubernetes.client.NetworkingV1Api(client).list_namespaced_ingress(NS, label_selector=selector).items
        return items[0].spec.rules[0].host if items else None
    items = kubernetes.client.CustomObjectsApi(client).list_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", NS, "httproutes", label_selector=selector)["items"]
    return items[0]["spec"]["hostnames"][0] if items else None


def pod_ip(client, run: str) -> str | None:
    try:
        pod = kubernetes.client.CoreV1Api(client).read_namespaced_pod(run, NS)
    except kubernetes.client.ApiException:
        return None
    ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    return pod.status.pod_ip if ready else None


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s")


def latency(asker: Asker, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.monotonic()
        asker.status()
        out.append(time.monotonic() - t)
    return out


NOWHERE = {"nodeSelector": {"toolshare.dev/benchmark-filler": "no-such-node"}}


def background(kubeconfig: Path, n: int, backend: str, create: bool) -> float:
    """N runs shared with bob (created once), waited for until every route of theirs lists bob in
    this backend's kind and the operator's writes have stopped; seconds it took."""
    import asyncio

    from benchmarks import propagation
    from benchmarks.kclient import KClient

    kind = ("networking.k8s.io/v1", "ingresses") if backend == "ingress" else (
        "gateway.networking.k8s.io/v1", "httproutes")

    async def go() -> float:
        async with KClient(str(kubeconfig)) as k:
            started = time.monotonic()
            if create:
                await propagation.create_runs(k, n, template=NOWHERE)
            while True:
                items = (await k.request("GET", f"/apis/{kind[0]}/namespaces/{propagation.NS}/{kind[1]}"))["items"]
                done = sum(1 for i in items if "bob" in (i["metadata"].get("annotations") or {}).get(
                    "toolshare.dev/allowed-users", ""))
                if done >= n:
                    # Every route lists bob, but the operator may still be writing the last runs'
                    # other children and statuses: measuring then measured its backlog (10,000
                    # runs: Service writes timing out during the rounds). Until its writes stop
                    # (the scheduler's writes and Events about the Pods pinned nowhere go on).
                    await propagation.settle(k, quiet=10.0, timeout=3600,
                                             ignore=lambda key: key.endswith(("events", "pods/status")))
                    return time.monotonic() - started
                if time.monotonic() - started > 3600:
                    raise TimeoutError(f"not all {n} {kind[1]} listed bob within an hour")
                await asyncio.sleep(max(0.5, n / 2000))

    return asyncio.run(go())


def peak_rss_mb(pid: int | None) -> float | None:
    """A process's peak resident memory so far (VmHWM), in MB."""
    from benchmarks.propagation import status_mb

    try:
        peak = status_mb(pid, "VmHWM")
    except (OSError, ValueError):
        return None
    return None if math.isnan(peak) else round(peak, 1)  # nan: no such line


def measure(backend: str, client, api, router: Traefik, gate_url: str, issuer: DevIssuer, rounds: int,
            requests: int) -> dict:
    run = f"nb-{backend}"
    api.create_namespaced_custom_object(GROUP, VERSION, NS, "toolruns", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ToolRun", "metadata": {"name": run},
        "spec": {"owner": "alice", "image": catalog.PYTHON, "command": ["python3", "-m", "http.server", "8888"],
                 "endpoints": [{"name": "lab", "port": 8888, "protocol": "http"}]}})
    host = wait(lambda: route_host(client, backend, run), 120, f"the {backend} route of {run}")
    ip = wait(lambda: pod_ip(client, run), 300, f"{run}'s Pod ready")
    alice = Asker(router.url, "/", issuer.token("alice"), host)
    # Traefik rebuilds its whole configuration on a change: with 10,000 other Ingresses that took
    # more than two minutes (2026-12-07), so the new run's first 200 is waited for, and timed.
    t = time.monotonic()
    wait(lambda: alice.status() == 200, 1800, f"alice through Traefik ({backend})")
    routed = time.monotonic() - t
    bob = {"router": Asker(router.url, "/", issuer.token("bob"), host),
           "gate": Asker(gate_url, f"/check/{NS}/{run}/lab", issuer.token("bob"))}
    through = latency(alice, requests)
    straight = latency(Asker(f"http://{ip}:8888", "/", None), requests)
    allow: dict[str, list[float]] = {"router": [], "gate": []}
    deny: dict[str, list[float]] = {"router": [], "gate": []}
    for i in range(rounds):
        name = f"bob-{i}"
        t = time.monotonic()  # from sending the create to each path's first allow
        create_share(api, NS, run, name)
        offset = time.monotonic() - t  # the create's own round trip, counted in
        for path, seconds in until({"router": (bob["router"], 200), "gate": (bob["gate"], 202)}).items():
            allow[path].append(offset + seconds)
        t = time.monotonic()  # from sending the delete to each path's first deny
        api.delete_namespaced_custom_object(GROUP, VERSION, NS, "runshares", name)
        offset = time.monotonic() - t
        for path, seconds in until({"router": (bob["router"], 403), "gate": (bob["gate"], 403)}).items():
            deny[path].append(offset + seconds)
    return {"revoke_to_deny": {p: summary(v) for p, v in deny.items()},
            "share_to_allow": {p: summary(v) for p, v in allow.items()},
            "request_as_alice": {"through_router": summary(through), "tool_straight": summary(straight)},
            "new_run_routed_s": round(routed, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--requests", type=int, default=300, help="requests as alice for the latency figures")
    parser.add_argument("--runs", type=int, default=0, help="other runs shared with bob, held meanwhile")
    parser.add_argument("--backend", choices=("ingress", "gateway", "both"), default="both")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="toolshare-bench-router-"))
    bins = ensure_binaries()
    state = cluster.up(work / "cluster", bins, log=lambda *_: None, node=True)
    kubeconfig = state.directory / "kubeconfig"
    services: list = []
    router = None
    issuer = DevIssuer().start()
    try:
        install_crds(bins, kubeconfig)
        client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        proxy = devservices.oauth2_proxy(issuer.url, work).start()
        gate = devservices.gate(kubeconfig, f"{proxy.url}/oauth2/auth", work).start()
        services = [proxy, gate]
        router = Traefik(work / "traefik", client, gateway=True).start()
        kubernetes.client.CoreV1Api(client).create_namespace({"metadata": {"name": NS}})
        api = kubernetes.client.CustomObjectsApi(client)
        result: dict = {"machine": f"{os.cpu_count()} cores, {platform.machine()}, python {platform.python_version()}",
                        "rounds": args.rounds, "other_runs": args.runs}
        modes = {"ingress": {}, "gateway": {"TOOLSHARE_ROUTING": "gateway",
                                            "TOOLSHARE_GATEWAY": f"{traefikmod.NAMESPACE}/{traefikmod.GATEWAY}",
                                            "TOOLSHARE_GATEWAY_AUTH": "traefik"}}
        created = False
        for backend, env in modes.items():
            if args.backend not in ("both", backend):
                continue
            operator = start_operator(kubeconfig, work / f"operator-{backend}.log",
                                      {"TOOLSHARE_GATE_URL": gate.url, **env})
            try:
                admitting(kubeconfig)
                if args.runs:
                    result[f"{backend}_other_runs_synced_s"] = round(background(kubeconfig, args.runs, backend,
                                                                                not created), 1)
                    created = True
                result[backend] = measure(backend, client, api, router, gate.url, issuer, args.rounds, args.requests)
                # Peaks since each process started: the gate's and Traefik's span every backend so far.
                result[backend]["peak_rss_mb"] = {
                    "operator": peak_rss_mb(operator.pid), "gate": peak_rss_mb(gate.proc.pid),
                    "traefik": peak_rss_mb(router.service.proc.pid if router.service else None)}
            finally:
                stop(operator)
        print(json.dumps(result, indent=2))
    finally:
        if router is not None:
            router.stop()
        for svc in reversed(services):
            svc.stop()
        issuer.stop()
        cluster.down(state.directory, log=lambda *_: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
