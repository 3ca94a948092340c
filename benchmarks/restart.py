"""Restart benchmark: the operator restarted again and again over N unchanged runs (issue 17, goal 4a).

    python -m benchmarks.restart --runs 10000 --repeat 3
    python -m benchmarks.restart --runs 10000 --repeat 3 --code <worktree of an older commit> --code .

starts a local control plane, creates N ToolRuns each shared with bob, lets the operator sync them,
then restarts it `--repeat` times per `--code` tree (alternating, so that a control plane that
drifts over the run weighs on every tree alike). Before each restart it times a bare paged LIST of
every kind the operator lists (the floor of a restart, measured then and there); the restart is
timed from the operator's exec to every run reconciled once (its toolshare_reconciles_total). Each
restart reports both, their ratio, the operator's CPU seconds and RSS, and its writes (0 expected).
`--profile DIR` runs py-spy on every restart (DIR/<code index>-<repeat>.txt, collapsed stacks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.kclient import KClient
from benchmarks.propagation import (Proc, bare_list, code_env, control_plane, create_runs, diff, emit, machine, operator_argv,
                                    profiler, reconciles, say, settle, stop_profiler, wait_ingresses, wait_webhooks,
                                    writes)
from toolshare.local.controlplane import cluster


async def restart(k: KClient, env: dict, port: int, runs: int, log: Path, timeout: float, profile: str | None,
                  name: str) -> dict:
    bare = await bare_list(k)
    before = await writes(k)
    started = time.monotonic()
    op = Proc(operator_argv(port), log, env)
    spy = profiler(op, profile, name)
    try:
        while await reconciles(port) < runs:
            if time.monotonic() - started > timeout:
                raise TimeoutError("restart: not every run reconciled")
            await asyncio.sleep(0.1)
        seconds = time.monotonic() - started
        stop_profiler(spy)
        out = {"restart_seconds": round(seconds, 2), "bare_list_seconds": round(bare, 2),
               "ratio": round(seconds / max(bare, 1e-9), 2), "cpu_seconds": round(op.cpu_seconds(), 2),
               "rss_mb": round(op.rss_mb(), 1)}
        out["writes"] = diff(await settle(k), before)
    finally:
        op.stop()
    return out


async def bench(args) -> dict:
    directory = Path(tempfile.mkdtemp(prefix="toolshare-bench-"))
    _, kubeconfig, env = control_plane(directory)
    roots = [Path(c).resolve() for c in args.code] or [Path(__file__).resolve().parent.parent]
    result: dict = {"runs": args.runs, "code": [str(r) for r in roots], "machine": machine(), "restarts": []}
    try:
        async with KClient(kubeconfig) as k:
            port = cluster.free_port()
            op = Proc(operator_argv(port), directory / "operator.log", code_env(env, roots[-1]))
            await wait_webhooks(k)
            say(f"creating {args.runs} runs and shares")
            await create_runs(k, args.runs)
            result["initial_sync_seconds"] = round(await wait_ingresses(k, args.runs, args.timeout), 1)
            await settle(k)
            op.stop()
            for repeat in range(args.repeat):
                for index, root in enumerate(roots):
                    say(f"restart {repeat + 1}/{args.repeat} of {root}")
                    one = await restart(k, code_env(env, root), port, args.runs, directory / "operator.log",
                                        args.timeout, args.profile, f"{index}-{repeat}")
                    result["restarts"].append({"code": str(root), **one})
                    say(f"  {json.dumps(one)}")
        result["median_by_code"] = {
            str(root): {key: statistics.median(r[key] for r in result["restarts"] if r["code"] == str(root))
                        for key in ("restart_seconds", "bare_list_seconds", "ratio", "cpu_seconds", "rss_mb")}
            for root in roots}
    finally:
        for proc in Proc.started:
            proc.stop()
        cluster.down(directory, log=lambda *_: None)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3, help="restarts per --code tree")
    p.add_argument("--code", action="append", default=[],
                   help="a checkout to run the operator from (repeat to alternate; default: this one)")
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--json", help="also write the result here")
    p.add_argument("--profile", metavar="DIR", help="py-spy every restart into DIR")
    args = p.parse_args(argv)
    return emit(asyncio.run(bench(args)), args.json)


if __name__ == "__main__":
    sys.exit(main())
