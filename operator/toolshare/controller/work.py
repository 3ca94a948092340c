"""The controller's work: queued reconciles of runs and shares, and what they announce.

Event handlers (handlers.py) only update the cache and queue keys here; a queued reconcile reads
the cluster from state.views afresh, so however many events came meanwhile it decides once, from
the newest state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Mapping

from toolshare import access, model
from toolshare.controller import metrics
from toolshare.controller.events import Poster
from toolshare.controller.reconcile import Reconciler, RetryLater
from toolshare.controller.workqueue import Timers, WorkQueue
from toolshare.state import views


class Runtime:
    """The controller's process-wide state."""

    reconciler: Reconciler | None = None
    events: Poster | None = None  # set with the reconciler (handlers.configure)
    work = WorkQueue()
    timers = Timers()
    # Runs each share applied to at its last reconcile: the "before" for Shared/Unshared events,
    # fresher than status.runs, which the cache only learns after our status write comes back.
    share_runs: dict[tuple[str, str], set[str]] = {}
    active_shares: set[tuple[str, str]] = set()


RT = Runtime()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def listed_runs(share: Mapping) -> set[str]:
    """The runs a share applied to when last reconciled (its status until we reconciled it)."""
    key = (share["metadata"]["namespace"], share["metadata"]["name"])
    known = RT.share_runs.get(key)
    return known if known is not None else set((share.get("status") or {}).get("runs") or [])


def host_holder(run: Mapping) -> Mapping | None:
    """The oldest run claiming this run's host, if it is another run."""
    settings = RT.reconciler.settings
    claims = model.host_claims(views.runs_on_host(model.host_for(run, settings)), settings)
    holder = next(iter(claims.values()), None)
    if holder is None or holder["metadata"].get("uid") == run["metadata"].get("uid"):
        return None
    return holder


async def reconcile_run(namespace: str, name: str) -> None:
    """Queue a reconcile of one run (see WorkQueue)."""
    RT.work.add(("run", namespace, name), lambda: _reconcile_run(namespace, name))


async def _reconcile_run(namespace: str, name: str) -> None:
    # One at a time per run: the work queue never runs a key twice at once.
    run = views.run(namespace, name)
    if run is None or run["metadata"].get("deletionTimestamp"):
        return  # the garbage collector removes the children
    holder = None if model.validate_run(run) else host_holder(run)
    shares = views.shares_for(namespace, name)
    key = ("run", namespace, name)
    started = time.perf_counter()
    try:
        await RT.reconciler.reconcile_run(run, shares, views.runs_for(namespace, run, shares),
                                          views.children(namespace, name), holder, utcnow())
        RT.timers.succeeded(key)
        metrics.RECONCILES.labels("ToolRun", "ok").inc()
    except RetryLater:
        metrics.RECONCILES.labels("ToolRun", "retry").inc()
        RT.timers.retry(key, lambda: reconcile_run(namespace, name))
    finally:
        metrics.RECONCILE_SECONDS.labels("ToolRun").observe(time.perf_counter() - started)


async def reconcile_share(namespace: str, name: str) -> None:
    """Queue a reconcile of one share (see WorkQueue)."""
    RT.work.add(("share", namespace, name), lambda: _reconcile_share(namespace, name))


async def _reconcile_share(namespace: str, name: str) -> None:
    """Update one share's status, tell its runs' owners (Events), and reconcile the runs it touches."""
    share = views.share(namespace, name)
    if share is None:
        return
    runs = views.share_runs(namespace, share)
    old = listed_runs(share)
    started = time.perf_counter()
    key = ("share-status", namespace, name)
    try:
        state = await RT.reconciler.reconcile_share(share, runs, utcnow())
        RT.timers.succeeded(key)
        metrics.RECONCILES.labels("RunShare", "ok").inc()
    except RetryLater as e:
        # Only the share's status failed to land: its runs still follow the verdict now,
        # and the status is written on a retry.
        state = e.result
        metrics.RECONCILES.labels("RunShare", "retry").inc()
        RT.timers.retry(key, lambda: reconcile_share(namespace, name))
    metrics.RECONCILE_SECONDS.labels("RunShare").observe(time.perf_counter() - started)
    count_active(namespace, name, state.reason == access.ACTIVE)
    new = set(state.runs)
    RT.share_runs[(namespace, name)] = new
    announce(runs, share, old, new, state.reason)
    for run_name in sorted(old | new):
        await reconcile_run(namespace, run_name)
    expiry = access.next_expiry([share], utcnow())
    if expiry is not None:
        delay = max((expiry - utcnow()).total_seconds(), 0) + 0.05
        RT.timers.schedule(("share", namespace, name), asyncio.get_running_loop().time() + delay,
                           lambda: reconcile_share(namespace, name))


async def share_deleted(namespace: str, name: str, body: Mapping) -> None:
    """A share is gone: announce it on its runs, forget its timer, reconcile the runs it touched."""
    old = RT.share_runs.pop((namespace, name), None)
    if old is None:
        old = set((body.get("status") or {}).get("runs") or [])
    count_active(namespace, name, False)
    runs = views.share_runs(namespace, body)
    announce(runs, body, old, set(), "Deleted")
    RT.timers.cancel(("share", namespace, name))
    for run_name in sorted(old | {n for n, r in runs.items() if model.share_applies_to(body, r)}):
        await reconcile_run(namespace, run_name)


def count_active(namespace: str, name: str, active: bool) -> None:
    (RT.active_shares.add if active else RT.active_shares.discard)((namespace, name))
    metrics.ACTIVE_SHARES.set(len(RT.active_shares))


def announce(runs: Mapping[str, Mapping], share: Mapping, old: set[str], new: set[str], reason: str) -> None:
    """Events on the runs: who was given access, and who lost it (unshare or expiry)."""
    spec = share.get("spec") or {}
    who = ", ".join([*(spec.get("users") or []), *(f"group:{g}" for g in spec.get("groups") or [])])
    share_name = share["metadata"]["name"]
    for run_name in sorted(new - old):
        if run_name in runs:
            RT.events.post(runs[run_name], "Normal", "Shared", f"RunShare {share_name} shares this run with {who}")
    for run_name in sorted(old - new):
        if run_name in runs:
            why = "ShareExpired" if reason == access.EXPIRED else "Unshared"
            RT.events.post(runs[run_name], "Normal", why, f"RunShare {share_name} no longer shares this run ({reason})")
