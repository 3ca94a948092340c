"""kopf handlers: thin glue between watch events and the reconciler.

Everything the decisions need is kept in kopf indexes (pre-populated before any handler runs, so
a restart sees the whole cluster before it decides anything). Handlers are `on.event`, not
`on.create/update`: kopf then keeps no progress or diff-base annotations, so an idle or restarted
operator writes nothing at all; the reconciler compares desired with actual itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping

import kopf

from . import render
from .kube import Kube
from .reconcile import Reconciler, RetryLater, host_claims, strip
from .settings import Settings

log = logging.getLogger("toolshare.handlers")
GROUP, VERSION = "toolshare.dev", "v1alpha1"
MANAGED = {render.LABEL_MANAGED_BY: render.MANAGED_BY}


class Runtime:
    """The operator's process-wide state: the reconciler, the indexes, scheduled re-reconciles."""

    reconciler: Reconciler | None = None
    indexes: dict = {}
    timers: dict[tuple, asyncio.TimerHandle] = {}
    backoff: dict[tuple, float] = {}
    # Runs each share applied to at its last reconcile: the "before" for Shared/Unshared events,
    # fresher than status.runs, which the index only learns after our status write comes back.
    share_runs: dict[tuple[str, str], set[str]] = {}


RT = Runtime()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_) -> None:
    # One place for kopf's identity. No finalizers: children are owned and garbage-collected.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="toolshare.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="toolshare.dev")
    settings.persistence.finalizer = "toolshare.dev/finalizer"
    settings.posting.level = logging.WARNING  # kopf's own warnings and errors become Events
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    config = Settings.from_env()
    RT.reconciler = Reconciler(Kube.from_environment(config.field_manager), config)
    log.info("toolshare operator configured: %s", config)


# --- indexes: the cluster as the decisions need it ----------------------------------------

@kopf.index(GROUP, VERSION, "toolruns")
def toolruns_by_ns(namespace, body, **_):
    return {namespace: strip(body)}


@kopf.index(GROUP, VERSION, "runshares")
def runshares_by_ns(namespace, body, **_):
    return {namespace: strip(body)}


def _child(namespace, labels, body):
    return {(namespace, labels[render.LABEL_RUN]): strip(body)}


def _owned(labels, **_):
    return render.LABEL_RUN in labels


@kopf.index("v1", "pods", labels=MANAGED, when=_owned)
def child_pods(namespace, labels, body, **_):
    return _child(namespace, labels, body)


@kopf.index("v1", "services", labels=MANAGED, when=_owned)
def child_services(namespace, labels, body, **_):
    return _child(namespace, labels, body)


@kopf.index("networking.k8s.io", "v1", "ingresses", labels=MANAGED, when=_owned)
def child_ingresses(namespace, labels, body, **_):
    return _child(namespace, labels, body)


@kopf.index("networking.k8s.io", "v1", "networkpolicies", labels=MANAGED, when=_owned)
def child_networkpolicies(namespace, labels, body, **_):
    return _child(namespace, labels, body)


def _remember(kwargs: Mapping) -> None:
    for name in ("toolruns_by_ns", "runshares_by_ns", "child_pods", "child_services",
                 "child_ingresses", "child_networkpolicies"):
        RT.indexes[name] = kwargs[name]


def _runs(namespace: str) -> dict[str, Mapping]:
    return {r["metadata"]["name"]: r for r in RT.indexes["toolruns_by_ns"].get(namespace, [])}


def _shares(namespace: str) -> list[Mapping]:
    return list(RT.indexes["runshares_by_ns"].get(namespace, []))


def _children(namespace: str, run: str) -> dict[tuple[str, str], Mapping]:
    out = {}
    for name in ("child_pods", "child_services", "child_ingresses", "child_networkpolicies"):
        for obj in RT.indexes[name].get((namespace, run), []):
            out[(obj["kind"], obj["metadata"]["name"])] = obj
    return out


def _all_runs() -> list[Mapping]:
    return [r for store in RT.indexes["toolruns_by_ns"].values() for r in store]


# --- reconciling ----------------------------------------------------------------------------

def _schedule(key: tuple, when: float, callback) -> None:
    """Run `callback` at loop time `when`, replacing a later timer for the same key."""
    loop = asyncio.get_running_loop()
    existing = RT.timers.get(key)
    if existing is not None and not existing.cancelled() and existing.when() <= when:
        return
    if existing is not None:
        existing.cancel()
    RT.timers[key] = loop.call_at(when, lambda: asyncio.ensure_future(callback()))


async def reconcile_run(namespace: str, name: str) -> None:
    rec = RT.reconciler
    async with rec.lock(namespace, name):
        runs = _runs(namespace)
        run = runs.get(name)
        if run is None or run["metadata"].get("deletionTimestamp"):
            return  # the garbage collector removes the children
        claims = host_claims(_all_runs(), rec.settings) if not render.validate_run(run) else {}
        holder = claims.get(render.host_for(run, rec.settings)) if claims else None
        if holder is not None and holder["metadata"].get("uid") == run["metadata"].get("uid"):
            holder = None
        key = ("run", namespace, name)
        try:
            await rec.reconcile_run(run, _shares(namespace), runs, _children(namespace, name), holder, utcnow())
            RT.backoff.pop(key, None)
        except RetryLater:
            delay = min(RT.backoff.get(key, 0.5) * 2, 60.0)
            RT.backoff[key] = delay
            _schedule(key, asyncio.get_running_loop().time() + delay, lambda: reconcile_run(namespace, name))


async def reconcile_share(namespace: str, name: str) -> None:
    """Update one share's status, tell its runs' owners (Events), and reconcile the runs it touches."""
    rec = RT.reconciler
    share = next((s for s in _shares(namespace) if s["metadata"]["name"] == name), None)
    if share is None:
        return
    async with rec.lock(namespace, f"share:{name}"):
        runs = _runs(namespace)
        old = RT.share_runs.get((namespace, name))
        if old is None:
            old = set((share.get("status") or {}).get("runs") or [])
        state = await rec.reconcile_share(share, runs, utcnow())
        new = set(state.runs)
        RT.share_runs[(namespace, name)] = new
        _announce(namespace, runs, share, old, new, state.reason)
    for run_name in sorted(old | new):
        await reconcile_run(namespace, run_name)
    expiry = render.next_expiry([share], utcnow())
    if expiry is not None:
        delay = max((expiry - utcnow()).total_seconds(), 0) + 0.05
        _schedule(("share", namespace, name), asyncio.get_running_loop().time() + delay,
                  lambda: reconcile_share(namespace, name))


def _announce(namespace, runs, share, old: set[str], new: set[str], reason: str) -> None:
    """Events on the runs: who was given access, and who lost it (unshare or expiry)."""
    spec = share.get("spec") or {}
    who = ", ".join([*(spec.get("users") or []), *(f"group:{g}" for g in spec.get("groups") or [])])
    share_name = share["metadata"]["name"]
    for run_name in sorted(new - old):
        if run_name in runs:
            kopf.event(runs[run_name], type="Normal", reason="Shared",
                       message=f"RunShare {share_name} shares this run with {who}")
    for run_name in sorted(old - new):
        if run_name in runs:
            why = "ShareExpired" if reason == render.EXPIRED else "Unshared"
            kopf.event(runs[run_name], type="Normal", reason=why,
                       message=f"RunShare {share_name} no longer shares this run ({reason})")


@kopf.on.event(GROUP, VERSION, "toolruns")
async def on_toolrun(event, namespace, name, body, **kwargs):
    _remember(kwargs)
    if event["type"] == "DELETED":
        for share in _shares(namespace):
            if name in ((share.get("status") or {}).get("runs") or []):
                await reconcile_share(namespace, share["metadata"]["name"])
        await _reconcile_host_peers(body)
        return
    await reconcile_run(namespace, name)
    # A new or relabelled run may change which shares apply (RunNotFound -> Active, selectors).
    for share in _shares(namespace):
        listed = name in ((share.get("status") or {}).get("runs") or [])
        if listed or render.share_applies_to(share, body):
            await reconcile_share(namespace, share["metadata"]["name"])


async def _reconcile_host_peers(run: Mapping) -> None:
    """After a run goes, a later run that wanted its host may now have it."""
    settings = RT.reconciler.settings
    if render.validate_run(run):
        return
    host = render.host_for(run, settings)
    for other in _all_runs():
        if not render.validate_run(other) and render.host_for(other, settings) == host:
            await reconcile_run(other["metadata"]["namespace"], other["metadata"]["name"])


@kopf.on.event(GROUP, VERSION, "runshares")
async def on_runshare(event, namespace, name, body, **kwargs):
    _remember(kwargs)
    if event["type"] == "DELETED":
        old = RT.share_runs.pop((namespace, name), None)
        if old is None:
            old = set((body.get("status") or {}).get("runs") or [])
        runs = _runs(namespace)
        _announce(namespace, runs, body, old, set(), "Deleted")
        timer = RT.timers.pop(("share", namespace, name), None)
        if timer:
            timer.cancel()
        for run_name in sorted(old | {n for n, r in runs.items() if render.share_applies_to(body, r)}):
            await reconcile_run(namespace, run_name)
        return
    await reconcile_share(namespace, name)


async def _on_child(event, namespace, labels, **kwargs):
    _remember(kwargs)
    # Only a deletion by someone else, or a Pod's phase, can make a child disagree with its run;
    # our own writes are already accounted for by the reconciler.
    if event["type"] in ("DELETED", "MODIFIED", None):
        run = labels.get(render.LABEL_RUN)
        if run and run in _runs(namespace):
            await reconcile_run(namespace, run)


for _group_version, _plural in (("v1", "pods"), ("v1", "services"),
                                ("networking.k8s.io/v1", "ingresses"),
                                ("networking.k8s.io/v1", "networkpolicies")):
    kopf.on.event(*_group_version.split("/"), _plural, labels=MANAGED, when=_owned,
                  id=f"child-{_plural}")(_on_child)
