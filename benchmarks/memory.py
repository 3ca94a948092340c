"""Memory benchmark: the operator's RSS with N ToolRuns (each with its Pod, Service, Ingress,
NetworkPolicy and one RunShare).

    python -m benchmarks.memory --runs 10000

starts a local control plane, creates N runs and N shares as admin before the operator starts
(spec.owner and the sharer annotations set, so no admission webhook is involved), starts the
operator as in production (`python -m toolshare.cli.main operator`, its own process), waits until every
Ingress exists and the writes have settled, and reports its RSS (and peak RSS). Then it restarts
the operator on the unchanged cluster, waits until every run was reconciled, and reports the RSS
again (the steady state of a restarted operator: the cache filled by LIST, kopf's watches).
Last, with the operator stopped, it starts the gate (`python -m toolshare.cli.main gate`, its own
process) `--gate-starts` times on the same cluster and reports, for each start, the time until
/readyz answers (every watched kind listed into its memory: it decides from the N runs and N shares
from then on), its CPU until then, its RSS once ready and idle, and its peak RSS. `--gate-code DIR`
(repeatable) runs the gate from those checkouts in turn; `--gate-only` with a kept `--dir` skips
the operator.

`--dir DIR` keeps the control plane (and its objects) in DIR and reuses it on the next call, so a
code change can be measured without creating 10,000 runs again (`--down` stops it at the end).
`--trace` runs the operator under tracemalloc and prints the biggest allocation sites after the
restart (RSS is then inflated by tracemalloc's own bookkeeping; use it to compare sites only).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.kclient import KClient
from benchmarks.propagation import Proc, code_env, cpu_of, emit, reconciles, say, settle, status_mb
from toolshare.access import ANN_SHARED_BY, ANN_SHARED_BY_GROUPS
from toolshare.local import services
from toolshare.local.controlplane import cluster
from toolshare.local.controlplane.binaries import ensure_binaries
from toolshare.local.dev import install_crds

NS = "mem"
GROUP = "/apis/toolshare.dev/v1alpha1"


async def create_runs(k: KClient, n: int) -> int:
    """Create runs r0..r{n-1} and their shares (those missing); return how many were created."""
    try:
        await k.request("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
    except RuntimeError as e:
        if "409" not in str(e):
            raise
    existing = await names(k, f"{GROUP}/namespaces/{NS}/runshares")
    sem = asyncio.Semaphore(32)

    async def one(i: int):
        async with sem:
            run = {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun", "metadata": {"name": f"r{i}"},
                   "spec": {"owner": "alice", "image": "jupyter/base-notebook",
                            "endpoints": [{"name": "lab", "port": 8888, "protocol": "http"},
                                          {"name": "ssh", "port": 22, "protocol": "ssh"}]}}
            share = {"apiVersion": "toolshare.dev/v1alpha1", "kind": "RunShare",
                     "metadata": {"name": f"r{i}", "annotations": {ANN_SHARED_BY: "admin",
                                                                   ANN_SHARED_BY_GROUPS: "system:masters"}},
                     "spec": {"runRef": {"name": f"r{i}"}, "users": ["bob"], "groups": ["lab"]}}
            for plural, body in (("toolruns", run), ("runshares", share)):
                try:
                    await k.request("POST", f"{GROUP}/namespaces/{NS}/{plural}", body)
                except RuntimeError as e:
                    if "409" not in str(e):
                        raise

    todo = [i for i in range(n) if f"r{i}" not in existing]
    await asyncio.gather(*(one(i) for i in todo))
    return len(todo)


async def names(k: KClient, path: str, selector: str = "") -> set[str]:
    """Names of every object at `path` (paginated, metadata only, so 10,000 objects stay cheap)."""
    out: set[str] = set()
    token = ""
    while True:
        params = {"limit": "1000", **({"continue": token} if token else {}),
                  **({"labelSelector": selector} if selector else {})}
        async with k.session.get(path, params=params, headers={
                "Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"}) as resp:
            body = await resp.json()
        out.update(i["metadata"]["name"] for i in body.get("items") or [])
        token = (body.get("metadata") or {}).get("continue") or ""
        if not token:
            return out


async def wait_ingresses(k: KClient, n: int, timeout: float, op: Proc) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        found = len(await names(k, f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses"))
        if found >= n:
            return time.monotonic() - started
        if op.p.poll() is not None:
            raise RuntimeError(f"the operator exited ({op.p.returncode})")
        say(f"{found}/{n} ingresses, operator RSS {op.rss_mb():.1f} MB")
        await asyncio.sleep(5 if n > 2000 else 1)
    raise TimeoutError(f"not all {n} Ingresses exist after {timeout}s")


def operator_argv(metrics_port: int, trace: Path | None) -> list[str]:
    if trace is not None:
        return [sys.executable, "-m", "benchmarks.memory", "--traced-operator", str(trace), "--metrics-port",
                str(metrics_port)]
    return [sys.executable, "-m", "toolshare.cli.main", "operator", "--metrics-port", str(metrics_port)]


def traced_operator(out: str, metrics_port: str) -> int:
    """The operator under tracemalloc; SIGUSR1 writes a snapshot to `out`."""
    import tracemalloc

    tracemalloc.start(int(os.environ.get("TOOLSHARE_TRACE_FRAMES", "1")))

    def dump(*_):
        tracemalloc.take_snapshot().dump(out)
        Path(out + ".done").write_text("")

    signal.signal(signal.SIGUSR1, dump)
    from toolshare.cli import main as cli

    return cli.main(["operator", "--metrics-port", metrics_port])


def trace_report(path: Path, top: int = 30) -> str:
    import tracemalloc

    snap = tracemalloc.Snapshot.load(str(path)).filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")])
    total = sum(s.size for s in snap.statistics("filename"))
    lines = [f"traced total {total / 1e6:.1f} MB", "-- by file --"]
    lines += [f"{s.size / 1e6:8.1f} MB {s.count:9d}  {s.traceback[0].filename}" for s in snap.statistics("filename")[:top]]
    lines.append("-- by line --")
    lines += [f"{s.size / 1e6:8.1f} MB {s.count:9d}  {s.traceback[0]}" for s in snap.statistics("lineno")[:top]]
    lines.append("-- by traceback (top 8) --")
    for s in snap.statistics("traceback")[:8]:
        lines.append(f"{s.size / 1e6:8.1f} MB {s.count:9d}")
        lines += [f"      {frame}" for frame in list(s.traceback)[-8:]]
    return "\n".join(lines)


async def gate_starts(kubeconfig: Path, directory: Path, env: dict, starts: int, idle: float,
                      timeout: float, codes: list[Path]) -> list[dict]:
    """Start the gate `starts` times per code tree (alternating) on the cluster as it is; per
    start: seconds to ready, CPU seconds to ready, RSS after `idle` s ready, peak RSS. Its
    oauth2-proxy is never asked (no request comes in), so it points nowhere."""
    out = []
    for start in range(starts * len(codes)):
        code = codes[start % len(codes)]
        gate = services.gate(kubeconfig, "http://127.0.0.1:9/oauth2/auth", directory, env=code_env(env, code))
        t = time.monotonic()
        try:
            await asyncio.to_thread(gate.start, timeout)  # until /readyz answers 200
            pid = gate.proc.pid
            one = {"code": str(code), "ready_seconds": round(time.monotonic() - t, 2),
                   "cpu_seconds_to_ready": round(cpu_of(pid), 2)}
            await asyncio.sleep(idle)
            one.update(rss_mb=round(status_mb(pid, "VmRSS"), 1), peak_rss_mb=round(status_mb(pid, "VmHWM"), 1))
            say(f"gate ({code.name}) ready in {one['ready_seconds']}s ({one['cpu_seconds_to_ready']}s CPU); RSS {one['rss_mb']} MB "
                f"(peak {one['peak_rss_mb']} MB)")
            out.append(one)
        finally:
            gate.stop()
    return out


async def bench(args) -> dict:
    directory = Path(args.dir).resolve() if args.dir else Path(tempfile.mkdtemp(prefix="toolshare-mem-"))
    directory.mkdir(parents=True, exist_ok=True)
    bins = ensure_binaries()
    state = cluster.up(directory, bins, log=lambda *_: None)
    kubeconfig = str(directory / "kubeconfig")
    install_crds(bins, directory / "kubeconfig")
    env = {**os.environ, "KUBECONFIG": kubeconfig,
           "TOOLSHARE_WEBHOOK_LISTEN": f"127.0.0.1:{cluster.free_port()}",
           "TOOLSHARE_WEBHOOK_CERT_DIR": str(directory / "webhook"), **cluster.webhook_client_env(directory)}
    trace = directory / "operator.tracemalloc" if args.trace else None
    result: dict = {"runs": args.runs, "cluster": str(directory),
                    "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
                               f"Python {platform.python_version()}"}
    del state
    op = None
    try:
        async with KClient(kubeconfig) as k:
            # A kept cluster still has the webhooks of a previous operator (failurePolicy Fail).
            for kind in ("validating", "mutating"):
                try:
                    await k.request("DELETE", f"/apis/admissionregistration.k8s.io/v1/{kind}webhookconfigurations/toolshare.dev")
                except RuntimeError:
                    pass
            codes = [Path(c).resolve() for c in args.gate_code] or [Path(__file__).resolve().parent.parent]
            if args.gate_only:
                result["gate"] = await gate_starts(Path(kubeconfig), directory, env, args.gate_starts, args.idle,
                                                   args.timeout, codes)
                return result
            t = time.monotonic()
            say(f"creating {args.runs} runs and shares (as admin, no webhooks)")
            result["created"] = await create_runs(k, args.runs)
            result["create_seconds"] = round(time.monotonic() - t, 1)
            say(f"created {result['created']} in {result['create_seconds']}s")
            port = cluster.free_port()
            log = directory / "operator.log"
            t = time.monotonic()
            op = Proc(operator_argv(port, trace), log, env)
            result["sync_seconds"] = round(await wait_ingresses(k, args.runs, args.timeout, op), 1)
            await settle(k, quiet=5.0, timeout=args.timeout)
            result["rss_mb_after_sync"] = round(op.rss_mb(), 1)
            result["peak_rss_mb_first_run"] = round(status_mb(op.p.pid, "VmHWM"), 1)
            say(f"every Ingress exists after {result['sync_seconds']}s; RSS {result['rss_mb_after_sync']} MB "
                f"(peak {result['peak_rss_mb_first_run']} MB)")
            op.stop()
            t = time.monotonic()
            op = Proc(operator_argv(port, trace), log, env)
            while await reconciles(port) < args.runs:
                if op.p.poll() is not None:
                    raise RuntimeError(f"the operator exited ({op.p.returncode})")
                if time.monotonic() - t > args.timeout:
                    raise TimeoutError("restart: not every run reconciled")
                await asyncio.sleep(0.5)
            result["restart_seconds"] = round(time.monotonic() - t, 1)
            await settle(k, quiet=5.0, timeout=args.timeout)
            await asyncio.sleep(args.idle)
            result["rss_mb_after_restart"] = round(op.rss_mb(), 1)
            result["peak_rss_mb_restart"] = round(status_mb(op.p.pid, "VmHWM"), 1)
            say(f"restarted: every run reconciled in {result['restart_seconds']}s; RSS "
                f"{result['rss_mb_after_restart']} MB (peak {result['peak_rss_mb_restart']} MB)")
            # Idle: nothing changes, so whatever CPU the operator (or the API server serving its
            # watches) spends now, every change pays on top of its own work.
            apiserver = cluster.State.load(directory).pids["kube-apiserver"]
            before, t = (op.cpu_seconds(), cpu_of(apiserver)), time.monotonic()
            await asyncio.sleep(args.idle_window)
            elapsed = time.monotonic() - t
            result["idle_cpu_cores"] = {"operator": round((op.cpu_seconds() - before[0]) / elapsed, 4),
                                        "kube-apiserver": round((cpu_of(apiserver) - before[1]) / elapsed, 4)}
            say(f"idle for {elapsed:.0f}s: CPU cores {result['idle_cpu_cores']}")
            if trace is not None:
                done = Path(str(trace) + ".done")
                done.unlink(missing_ok=True)
                os.kill(op.p.pid, signal.SIGUSR1)
                while not done.exists():
                    await asyncio.sleep(0.5)
                result["trace"] = str(trace)
                print(trace_report(trace), file=sys.stderr)
            op.stop()
            result["gate"] = await gate_starts(Path(kubeconfig), directory, env, args.gate_starts, args.idle,
                                               args.timeout, codes)
    finally:
        if op is not None:
            op.stop()
        if not args.dir or args.down:
            cluster.down(directory, log=lambda *_: None)
    return result


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--traced-operator"]:
        return traced_operator(argv[1], argv[3])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--dir", help="keep the control plane in DIR (reused if it is already there)")
    p.add_argument("--down", action="store_true", help="with --dir: stop the control plane at the end")
    p.add_argument("--trace", action="store_true", help="tracemalloc the operator; print the top sites")
    p.add_argument("--idle", type=float, default=5.0, help="seconds idle after the restart before measuring")
    p.add_argument("--idle-window", type=float, default=30.0,
                   help="seconds over which the restarted operator's idle CPU is measured")
    p.add_argument("--gate-starts", type=int, default=2, help="times the gate is started per --gate-code")
    p.add_argument("--gate-code", action="append", default=[],
                   help="a checkout to run the gate from (repeatable, alternating; default: this one)")
    p.add_argument("--gate-only", action="store_true", help="with a kept --dir: only the gate's starts")
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    return emit(asyncio.run(bench(args)), args.json)


if __name__ == "__main__":
    sys.exit(main())
