"""Propagation benchmark: RunShare write -> Ingress annotation, at N runs, against a floor.

    python -m benchmarks.propagation --runs 1000 --rate 100 --duration 30

starts a local control plane, creates N ToolRuns each shared with bob, runs the operator as in
production (its own process), and reports: initial sync time, propagation latency p50/p95/p99 for
share changes applied at a fixed rate, sustained changes/s, write requests per change (from the
API server's apiserver_request_total), operator RSS and CPU, restart time and restart writes.
After the rate phases, a revoke phase at the highest rate: each share's sharer takes the user the
last phase added away again (a narrowing, which the API server admits without a webhook call;
`webhook_calls` counts them), timed until the run's Ingress no longer lists that user.
Then it stops the operator and measures the floor (benchmarks/floor.py) on the same cluster, with
the same add and revoke phases.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.kclient import KClient
from toolshare.local.controlplane import cluster
from toolshare.local.controlplane.binaries import ensure_binaries
from toolshare.local.dev import install_crds

NS = "bench"
OURS = {"pods", "services", "ingresses", "networkpolicies", "toolruns", "runshares", "events"}
_LINE = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$')
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def say(*args) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *args, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


async def writes(k: KClient) -> dict:
    out: dict = {}
    for line in (await k.text("/metrics")).splitlines():
        m = _LINE.match(line)
        if m:
            lab = dict(_LABEL.findall(m.group("labels")))
            if lab.get("verb") in {"APPLY", "PATCH", "POST", "PUT", "DELETE"} and lab.get("resource") in OURS:
                key = f"{lab['verb']} {lab['resource']}{'/' + lab['subresource'] if lab.get('subresource') else ''}"
                out[key] = out.get(key, 0) + int(float(m.group("value")))
    return out


_WEBHOOK = re.compile(r'^apiserver_admission_webhook_admission_duration_seconds_(sum|count)\{(?P<labels>[^}]*)\} (?P<value>\S+)$')


async def webhook_seconds(k: KClient) -> dict:
    """(sum, count) of the API server's admission webhook call durations, per webhook name."""
    out: dict = {}
    for line in (await k.text("/metrics")).splitlines():
        m = _WEBHOOK.match(line)
        if m:
            name = dict(_LABEL.findall(m.group("labels"))).get("name", "?")
            total, count = out.get(name, (0.0, 0))
            out[name] = (total + float(m.group("value")), count) if m.group(1) == "sum" else (total, count + int(float(m.group("value"))))
    return out


def webhook_calls(after: dict, before: dict) -> dict:
    """Webhook calls per webhook name between two webhook_seconds() readings."""
    return {name: count - before.get(name, (0.0, 0))[1] for name, (_, count) in after.items()
            if count > before.get(name, (0.0, 0))[1]}


def webhook_means(after: dict, before: dict) -> dict:
    """Mean milliseconds per webhook call between two webhook_seconds() readings."""
    out = {}
    for name, (total, count) in after.items():
        t0, c0 = before.get(name, (0.0, 0))
        if count > c0:
            out[name] = round((total - t0) / (count - c0) * 1000, 1)
    return out


def status_mb(pid: int, field: str) -> float:
    """One memory figure of a process from /proc/PID/status (VmRSS, VmHWM: the peak so far), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def control_plane_cpu(state) -> dict:
    """CPU seconds so far of etcd, kube-apiserver and kube-controller-manager (they share the 2
    cores with the operator), and of this benchmark's own process (the load and its watch)."""
    out = {name: cpu_of(pid) for name, pid in state.pids.items()
           if name in ("etcd", "kube-apiserver", "kube-controller-manager")}
    out["benchmark"] = cpu_of(os.getpid())
    return out


def diff(after: dict, before: dict) -> dict:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


class Proc:
    """A measured child process (the operator or the floor)."""

    started: list["Proc"] = []  # stopped in bench()'s finally, whatever happened

    def __init__(self, argv: list[str], log: Path, env: dict):
        self.p = subprocess.Popen(argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
        Proc.started.append(self)

    def rss_mb(self) -> float:
        return status_mb(self.p.pid, "VmRSS")

    def cpu_seconds(self) -> float:
        return cpu_of(self.p.pid)

    def stop(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()


async def create_runs(k: KClient, n: int, template: dict | None = None) -> None:
    """N runs shared with bob; `template` (spec.template) e.g. pins their Pods to no node."""
    await k.request("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
    sem = asyncio.Semaphore(32)

    async def one(i: int):
        async with sem:
            await k.request("POST", f"/apis/toolshare.dev/v1alpha1/namespaces/{NS}/toolruns", {
                "apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun", "metadata": {"name": f"r{i}"},
                "spec": {"owner": "alice", "image": "jupyter/base-notebook",
                         **({"template": template} if template else {}),
                         "endpoints": [{"name": "lab", "port": 8888, "protocol": "http"},
                                       {"name": "ssh", "port": 22, "protocol": "ssh"}]}})
            await k.request("POST", f"/apis/toolshare.dev/v1alpha1/namespaces/{NS}/runshares", {
                "apiVersion": "toolshare.dev/v1alpha1", "kind": "RunShare", "metadata": {"name": f"r{i}"},
                "spec": {"runRef": {"name": f"r{i}"}, "users": ["bob"]}})

    await asyncio.gather(*(one(i) for i in range(n)))


async def wait_ingresses(k: KClient, n: int, timeout: float) -> float:
    """Seconds until all N Ingresses exist and list bob."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        items = (await k.request("GET", f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses"))["items"]
        done = sum(1 for i in items if "bob" in i["metadata"].get("annotations", {}).get("toolshare.dev/allowed-users", ""))
        if done >= n:
            return time.monotonic() - started
        await asyncio.sleep(max(0.5, n / 2000))  # a 10,000-item LIST is load of its own
    raise TimeoutError(f"initial sync: not all {n} Ingresses listed bob within {timeout}s")


async def settle(k: KClient, quiet: float = 3.0, timeout: float = 600.0, ignore=lambda key: False) -> dict:
    """Until no write (but those `ignore(key)` names) has been made for `quiet` seconds."""
    async def counted() -> dict:
        return {key: n for key, n in (await writes(k)).items() if not ignore(key)}

    last, since, start = await counted(), time.monotonic(), time.monotonic()
    while time.monotonic() - start < timeout:
        await asyncio.sleep(0.5)
        now = await counted()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    return last


async def tokens_held(k: KClient) -> dict[str, str]:
    """run -> the user other than bob its share now lists (what a revoke phase takes away)."""
    listing = await k.request("GET", f"/apis/toolshare.dev/v1alpha1/namespaces/{NS}/runshares")
    out = {}
    for share in listing["items"]:
        others = [u for u in share["spec"].get("users") or [] if u != "bob"]
        if len(others) == 1:
            out[share["spec"]["runRef"]["name"]] = others[0]
    return out


async def propagate(k: KClient, n: int, rate: float, duration: float, tag: str,
                    held: dict[str, str] | None = None) -> dict:
    """Change shares at `rate`/s for `duration` s; return latencies from write to Ingress annotation.

    A change adds a new user to a share (the user it added before goes); with `held` (a revoke:
    tokens_held(), read before the phase is measured), a change takes the one user besides bob
    away (a narrowing by its sharer, at most one per share), and the latency is until the run's
    Ingress no longer lists that user."""
    revoke = held is not None
    held = held or {}
    listing = await k.request("GET", f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses", params={"limit": "1"})
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    acked: dict[str, float] = {}
    started: set[str] = set()
    done = asyncio.Event()
    total = min(int(rate * duration), len(held)) if revoke else int(rate * duration)
    targets = sorted(held, key=lambda r: int(r[1:]))[:total] if revoke else []

    async def watcher():
        async for _, obj in k.watch(f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses",
                                    listing["metadata"]["resourceVersion"]):
            users = (obj["metadata"].get("annotations") or {}).get("toolshare.dev/allowed-users", "").split(",")
            if revoke:
                token = held.get(obj["metadata"]["name"].removesuffix(".lab"))
                if token in started and token not in seen and token not in users:
                    seen[token] = time.monotonic()
            else:
                for u in users:
                    if u.startswith(tag) and u not in seen:
                        seen[u] = time.monotonic()
            if len(seen) >= total:
                done.set()
                return

    watch_task = asyncio.create_task(watcher())
    await asyncio.sleep(0.5)
    start = time.monotonic()
    tasks = []
    for i in range(total):
        target = start + i / rate
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        run = targets[i] if revoke else f"r{i % n}"
        token = held[run] if revoke else f"{tag}{i}"
        users = ["bob"] if revoke else ["bob", token]

        async def change(run=run, token=token, users=users):
            t0 = time.monotonic()
            started.add(token)
            await k.request("PATCH", f"/apis/toolshare.dev/v1alpha1/namespaces/{NS}/runshares/{run}",
                            {"spec": {"users": users}}, content_type="application/merge-patch+json")
            sent[token] = t0
            acked[token] = time.monotonic() - t0

        tasks.append(asyncio.create_task(change()))
    await asyncio.gather(*tasks)
    send_seconds = time.monotonic() - start
    try:
        await asyncio.wait_for(done.wait(), timeout=60)
    except asyncio.TimeoutError:
        pass
    watch_task.cancel()
    # A change superseded before it propagated (the same run changed again) never shows; count it lost.
    lat = [seen[t] - sent[t] for t in sent if t in seen]
    last = max(seen.values(), default=start)
    return {"changes": total, "propagated": len(lat), "send_seconds": round(send_seconds, 2),
            "sustained_per_s": round(len(lat) / max(last - start, 1e-9), 1),
            "p50_ms": round(pct(lat, 50) * 1000, 1), "p95_ms": round(pct(lat, 95) * 1000, 1),
            "p99_ms": round(pct(lat, 99) * 1000, 1), "max_ms": round(max(lat, default=float('nan')) * 1000, 1),
            "write_ack_p50_ms": round(pct(list(acked.values()), 50) * 1000, 1),
            "write_ack_p99_ms": round(pct(list(acked.values()), 99) * 1000, 1)}


REPLAY_NS = "bench-replay"


async def pages(k: KClient, path: str, page: int = 500, selector: str = ""):
    """A paged LIST, one page of items at a time."""
    token = ""
    while True:
        params = {"limit": str(page), **({"continue": token} if token else {}),
                  **({"labelSelector": selector} if selector else {})}
        body = await k.request("GET", path, params=params)
        yield body.get("items") or []
        token = (body.get("metadata") or {}).get("continue") or ""
        if not token:
            return


async def list_all(k: KClient, path: str) -> list[dict]:
    return [item async for items in pages(k, path) for item in items]


async def replay_first_sync(k: KClient, env: dict, concurrency: int = 32) -> dict:
    """The API server's own time to accept the first sync's writes, measured on the same cluster:
    every child the operator's first sync applied, rendered again here exactly as the operator
    renders it (the same renderer, settings and policy) and server-side applied into a fresh
    namespace with the operator's field manager (ownerReferences dropped: no owner lives there),
    `concurrency` requests in flight (the operator's 32 workers); then every run's and share's
    status written once again (a merge patch as the operator's, with a new transition time).
    No operator and no webhooks run meanwhile. Rendering is done before the clock starts."""
    import datetime as dt

    from toolshare import render
    from toolshare.client.kube import object_path
    from toolshare.controller.reconcile import finish_child
    from toolshare.policy import Policy
    from toolshare.settings import Settings

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        settings, policy = Settings.from_env(), Policy.from_env()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    base = f"/apis/toolshare.dev/v1alpha1/namespaces/{NS}"
    runs = await list_all(k, f"{base}/toolruns")
    shares = await list_all(k, f"{base}/runshares")
    by_run: dict[str, list] = {}
    for share in shares:
        by_run.setdefault(share["spec"]["runRef"]["name"], []).append(share)
    runs_by_name = {r["metadata"]["name"]: r for r in runs}
    now = dt.datetime.now(dt.timezone.utc)
    children = []
    for run in runs:
        for child in render.render_children(run, by_run.get(run["metadata"]["name"], []), settings, now,
                                            runs_by_name, policy):
            child = finish_child(child, run)
            meta = {k: v for k, v in child["metadata"].items() if k != "ownerReferences"}
            children.append({**child, "metadata": {**meta, "namespace": REPLAY_NS}})
    await k.request("POST", "/api/v1/namespaces", {"metadata": {"name": REPLAY_NS}})
    deadline = time.monotonic() + 60  # Pods need the namespace's default service account
    while True:
        try:
            await k.request("GET", f"/api/v1/namespaces/{REPLAY_NS}/serviceaccounts/default")
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    sem = asyncio.Semaphore(concurrency)

    async def send(method: str, path: str, body: dict, content_type: str, params=None) -> None:
        async with sem:
            await k.request(method, path, body, content_type=content_type, params=params)

    t = time.monotonic()
    await asyncio.gather(*(send("PATCH", object_path(c["apiVersion"], c["kind"], REPLAY_NS, c["metadata"]["name"]), c,
                                "application/apply-patch+yaml", {"fieldManager": settings.field_manager, "force": "true"})
                           for c in children))
    children_seconds = time.monotonic() - t
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def restamped(obj: dict) -> dict:
        status = obj.get("status") or {}
        return {"status": {**status, "conditions": [{**c, "lastTransitionTime": stamp}
                                                    for c in status.get("conditions") or []]}}

    t = time.monotonic()
    await asyncio.gather(*(send("PATCH", f"{base}/{plural}/{o['metadata']['name']}/status", restamped(o),
                                "application/merge-patch+json")
                           for plural, objs in (("toolruns", runs), ("runshares", shares)) for o in objs))
    status_seconds = time.monotonic() - t
    return {"children": len(children), "children_seconds": round(children_seconds, 1),
            "statuses": len(runs) + len(shares), "status_seconds": round(status_seconds, 1)}


LISTED = ("/apis/toolshare.dev/v1alpha1/toolruns", "/apis/toolshare.dev/v1alpha1/runshares",
          "/apis/toolshare.dev/v1alpha1/imageshares", "/api/v1/pods", "/api/v1/services",
          "/apis/networking.k8s.io/v1/ingresses", "/apis/networking.k8s.io/v1/networkpolicies")


async def bare_list(k: KClient, page: int = 500) -> float:
    """Seconds a paged LIST (and JSON parse) of every kind the operator lists at start-up takes:
    the bare floor of a restart (goal: every run reconciled within 2x of it)."""
    started = time.monotonic()
    for path in LISTED:
        selector = "" if path.startswith("/apis/toolshare.dev") else "app.kubernetes.io/managed-by=toolshare"
        async for _ in pages(k, path, page, selector):
            pass
    return time.monotonic() - started


async def operator_metric(port: int, series: str) -> float:
    """One series of the operator's /metrics (0 if absent, -1 if the operator does not answer)."""
    import urllib.request

    def get():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return -1.0
        m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    return await asyncio.to_thread(get)


async def reconciles(port: int) -> float:
    return await operator_metric(port, 'toolshare_reconciles_total{kind="ToolRun",result="ok"}')


def code_env(env: dict, root: Path) -> dict:
    """The environment that runs a process from `root` (a checkout: root/operator holds toolshare)."""
    return {**env, "PYTHONPATH": os.pathsep.join([str(root / "operator"), str(root)])}


def profiler(proc: Proc, directory: str | None, name: str) -> subprocess.Popen | None:
    """py-spy sampling `proc` into DIR/NAME.txt (collapsed stacks: `sort -t' ' -k2 -n` reads them)."""
    if not directory:
        return None
    Path(directory).mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(spy), "record", "--pid", str(proc.p.pid), "--format", "raw", "--rate", "50", "--threads", "--idle",
                             "--nonblocking", "-o", str(Path(directory) / f"{name}.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(spy: subprocess.Popen | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


HANDSHAKES = "toolshare_webhook_tls_handshakes_total"


def operator_argv(metrics_port: int) -> list[str]:
    return [sys.executable, "-m", "toolshare.cli.main", "operator", "--metrics-port", str(metrics_port)]


async def wait_webhooks(k: KClient, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = await k.request("GET", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/toolshare.dev")
            m = await k.request("GET", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/toolshare.dev")
            if v.get("webhooks") and m.get("webhooks") and await principals_joined(k):
                return
        except RuntimeError:
            pass  # not registered, or not answering yet (503 for a just-established CRD, 500 connect)
        await asyncio.sleep(0.3)
    raise TimeoutError("the operator's webhooks and admission policies were not in effect")


async def principals_joined(k: KClient) -> bool:
    """A RunShare write is admitted and joined by the principals policy (a dry run): the webhooks
    answer and the API server serves RunShares to its admission policies (a few seconds after the
    CRD and the policy are created, it answers 503 until then)."""
    probe = {"apiVersion": "toolshare.dev/v1alpha1", "kind": "RunShare", "metadata": {"name": "probe"},
             "spec": {"runRef": {"name": "probe"}, "users": ["bob"]}}
    answer = await k.request("POST", "/apis/toolshare.dev/v1alpha1/namespaces/default/runshares", probe,
                             params={"dryRun": "All"})
    return (answer.get("metadata", {}).get("annotations") or {}).get("toolshare.dev/users") == "bob"


async def start_floor(kubeconfig: str, log: Path, env: dict, *flags: str) -> Proc:
    """benchmarks/floor.py, once it watches (its start-up LIST done)."""
    floor = Proc([sys.executable, "-m", "benchmarks.floor", "--kubeconfig", kubeconfig, "--namespace", NS, *flags],
                 log, env)
    deadline = time.monotonic() + 300
    while b"watching" not in (log.read_bytes() if log.exists() else b""):
        if floor.p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the floor did not start: {log.read_text(errors='replace')[-2000:]}")
        await asyncio.sleep(0.2)
    return floor


def machine() -> str:
    return f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}"


def control_plane(directory: Path):
    """A local control plane in `directory` with the CRDs: (its state, kubeconfig path, the
    environment the operator runs with)."""
    bins = ensure_binaries()
    state = cluster.up(directory, bins, log=lambda *_: None)
    kubeconfig = str(directory / "kubeconfig")
    install_crds(bins, directory / "kubeconfig")
    env = {**os.environ, "KUBECONFIG": kubeconfig,
           "TOOLSHARE_WEBHOOK_LISTEN": f"127.0.0.1:{cluster.free_port()}",
           "TOOLSHARE_WEBHOOK_CERT_DIR": str(directory / "webhook"), **cluster.webhook_client_env(directory)}
    return state, kubeconfig, env


async def bench(args) -> dict:
    directory = Path(tempfile.mkdtemp(prefix="toolshare-bench-"))
    state, kubeconfig, env = control_plane(directory)
    result: dict = {"runs": args.runs, "rate": args.rate, "duration": args.duration, "machine": machine()}
    try:
        async with KClient(kubeconfig) as k:
            port = cluster.free_port()
            op = Proc(operator_argv(port), directory / "operator.log", env)
            # Shares are admitted (sharer stamped) by the operator's webhooks: create after they are up.
            await wait_webhooks(k)
            t = time.monotonic()
            say(f"creating {args.runs} runs and shares")
            writes_before_create = await writes(k)
            await create_runs(k, args.runs)
            result["create_seconds"] = round(time.monotonic() - t, 1)
            say(f"created in {result['create_seconds']}s")
            result["initial_sync_seconds"] = round(await wait_ingresses(k, args.runs, args.timeout), 1)
            say(f"initial sync {result['initial_sync_seconds']}s")
            # The creates and every write the first sync made (the operator's, by kind).
            result["initial_sync_writes"] = diff(await settle(k), writes_before_create)
            # The control plane's CPU per second with N runs held and nothing changing (the
            # operator's watches idle, the controller manager's loops): subtracted per phase.
            cp0, t0 = control_plane_cpu(state), time.monotonic()
            await asyncio.sleep(10)
            idle = {n: v / (time.monotonic() - t0) for n, v in diff(control_plane_cpu(state), cp0).items()}
            result["idle_control_plane_cpu_per_s"] = {n: round(v, 3) for n, v in idle.items()}
            # One phase per offered rate, lowest first: where p99 stays under a second, and where
            # the operator stops keeping up. The highest rate is the headline, beside the floor.
            async def phase(proc: Proc, rate: float, tag: str, revoke: bool = False) -> dict:
                # A revoke's targets come from one LIST of every share, made before the phase is
                # measured: at 10,000 runs it is load of the benchmark's own.
                held = await tokens_held(k) if revoke else None
                before = await settle(k)
                cpu0, cp0, hooks0 = proc.cpu_seconds(), control_plane_cpu(state), await webhook_seconds(k)
                # Connections the API server opened to the webhooks (each a TLS handshake on both sides).
                shakes0 = await operator_metric(port, HANDSHAKES) if proc is op else 0.0
                t0 = time.monotonic()
                spy = profiler(proc, args.profile, f"{'floor' if proc is not op else 'operator'}-{tag}")
                prop = await propagate(k, args.runs, rate, args.duration, tag, held=held)
                stop_profiler(spy)
                cp = diff(control_plane_cpu(state), cp0)
                seconds = time.monotonic() - t0
                hooks = await webhook_seconds(k)
                w = diff(await settle(k), before)
                own = w.pop("PATCH runshares", 0)  # the benchmark's own share changes
                assert own == prop["changes"], (own, prop)
                out = {**prop, "writes_per_change": round(sum(w.values()) / max(prop["changes"], 1), 2),
                       "writes": w, "rss_mb": round(proc.rss_mb(), 1),
                       "cpu_seconds": round(proc.cpu_seconds() - cpu0, 1),
                       "control_plane_cpu_seconds": {n: round(v, 1) for n, v in cp.items()},
                       "seconds": round(seconds, 1),
                       # What the control plane spent beyond its idle rate (measured after the
                       # first sync), per change: comparable between phases of different lengths.
                       "control_plane_net_ms_per_change": {
                           n: round((v - idle.get(n, 0.0) * seconds) * 1000 / max(prop["changes"], 1), 2)
                           for n, v in cp.items()},
                       "webhook_calls": webhook_calls(hooks, hooks0), "webhook_call_mean_ms": webhook_means(hooks, hooks0)}
                if proc is op:
                    out["webhook_tls_handshakes"] = int(await operator_metric(port, HANDSHAKES) - shakes0)
                say(f"  p99 {out['p99_ms']} ms, {out['sustained_per_s']}/s")
                return out

            phases = {}
            for index, rate in enumerate(sorted(args.rate)):
                say(f"propagation phase (operator) at {rate:g}/s")
                phases[f"{rate:g}"] = await phase(op, rate, f"u{index}x")
            # Revoke: each share's sharer takes the user the last phase added away again. A
            # narrowing by the sharer: admitted by the API server without a webhook call.
            say(f"revoke phase (operator) at {max(args.rate):g}/s")
            result["operator_revoke"] = await phase(op, max(args.rate), "revoke", revoke=True)
            result["operator_by_rate"] = phases
            result["operator"] = phases[f"{max(args.rate):g}"]
            if args.operator_only:
                return result
            say("restart phase")
            # Restart with N unchanged runs: time until every run was reconciled once, and its writes.
            op.stop()
            result["bare_list_seconds"] = round(await bare_list(k), 1)
            before = await writes(k)
            t = time.monotonic()
            op = Proc(operator_argv(port), directory / "operator.log", env)
            while await reconciles(port) < args.runs:
                if time.monotonic() - t > args.timeout:
                    raise TimeoutError("restart: not every run reconciled")
                await asyncio.sleep(0.2)
            result["restart_seconds"] = round(time.monotonic() - t, 1)
            result["restart_ratio_to_bare_list"] = round(result["restart_seconds"] / max(result["bare_list_seconds"], 1e-9), 2)
            result["restart_writes"] = diff(await settle(k), before)
            result["restart_rss_mb"] = round(op.rss_mb(), 1)
            op.stop()
            say("floor phase")
            # The floor, on the same cluster and objects. It has no admission webhooks: remove the
            # operator's (failurePolicy Fail would refuse every write with the operator gone), so the
            # operator's numbers include the webhook round trip and the floor's do not.
            for kind in ("validating", "mutating"):
                await k.request("DELETE", f"/apis/admissionregistration.k8s.io/v1/{kind}webhookconfigurations/toolshare.dev")
            floor = await start_floor(kubeconfig, directory / "floor.log", env)
            result["floor"] = await phase(floor, max(args.rate), "f")
            say(f"revoke phase (floor) at {max(args.rate):g}/s")
            result["floor_revoke"] = await phase(floor, max(args.rate), "revoke", revoke=True)
            floor.stop()
            # The contract's writes and nothing else (floor --contract: Ingress apply + run status):
            # what the API server spends on them, the reference of goal 3.
            say(f"contract floor phases at {max(args.rate):g}/s")
            floor = await start_floor(kubeconfig, directory / "contract-floor.log", env, "--contract")
            result["contract_floor"] = await phase(floor, max(args.rate), "c")
            result["contract_floor_revoke"] = await phase(floor, max(args.rate), "revoke", revoke=True)
            floor.stop()
            say("replaying the first sync's writes without the operator")
            replay = result["replay_first_sync"] = await replay_first_sync(k, env)
            own = replay["children_seconds"] + replay["status_seconds"]
            result["first_sync_ratio_to_replay"] = {
                "children": round(result["initial_sync_seconds"] / max(replay["children_seconds"], 1e-9), 2),
                "children_and_status": round(result["initial_sync_seconds"] / max(own, 1e-9), 2),
                "create_and_sync_to_children_and_status": round(
                    (result["create_seconds"] + result["initial_sync_seconds"]) / max(own, 1e-9), 2)}
            result["apiserver_cpu_ratio_to_contract_floor"] = {
                name: round(result[ours]["control_plane_net_ms_per_change"].get("kube-apiserver", 0.0)
                            / max(result[ref]["control_plane_net_ms_per_change"].get("kube-apiserver", 0.0), 1e-9), 2)
                for name, ours, ref in (("add", "operator", "contract_floor"),
                                        ("revoke", "operator_revoke", "contract_floor_revoke"))}
            result["p99_ratio_to_floor"] = round(result["operator"]["p99_ms"] / max(result["floor"]["p99_ms"], 1e-9), 2)
            result["revoke_p99_ratio_to_floor"] = round(
                result["operator_revoke"]["p99_ms"] / max(result["floor_revoke"]["p99_ms"], 1e-9), 2)
    finally:
        for proc in Proc.started:  # an exception must not leave an operator behind (own session)
            proc.stop()
        cluster.down(directory, log=lambda *_: None)
    return result


def emit(result: dict, path: str | None) -> int:
    """Print a benchmark's result as JSON, and also write it to `path` if given (--json)."""
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        Path(path).write_text(text)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--rate", type=float, action="append",
                   help="share changes per second; repeat for one phase per rate (default 100)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of changes")
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--json", help="also write the result here")
    p.add_argument("--operator-only", action="store_true", help="skip the restart and floor phases (experiments)")
    p.add_argument("--profile", metavar="DIR", help="py-spy the operator during the change phase into DIR")
    args = p.parse_args(argv)
    args.rate = args.rate or [100.0]
    return emit(asyncio.run(bench(args)), args.json)


if __name__ == "__main__":
    sys.exit(main())
