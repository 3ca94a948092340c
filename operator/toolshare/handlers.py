"""kopf handlers: thin glue between watch events and the reconciler.

Everything the decisions need is kept in cache.py's views, filled by a LIST at start-up before any
handler runs (so a restart sees the whole cluster before it decides anything) and kept current
from the watch events below. Handlers are `on.event`, not
`on.create/update`: kopf then keeps no progress or diff-base annotations, so an idle or restarted
operator writes nothing at all; the reconciler compares desired with actual itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping

import kopf

from . import metrics, render
from .kube import Kube
from .policy import Policy
from .cache import CACHE, Source, limit_malloc_arenas, list_pages, release_memory
from .reconcile import Reconciler, RetryLater, host_claims
from .relist import relisted
from .settings import Settings

log = logging.getLogger("toolshare.handlers")
GROUP, VERSION = "toolshare.dev", "v1alpha1"
MANAGED = {render.LABEL_MANAGED_BY: render.MANAGED_BY}


class Runtime:
    """The operator's process-wide state: the reconciler, the indexes, scheduled re-reconciles."""

    reconciler: Reconciler | None = None
    indexes: dict = CACHE.views  # view name -> View (the same query shape kopf indexes had)
    timers: dict[tuple, asyncio.TimerHandle] = {}
    backoff: dict[tuple, float] = {}
    # Runs each share applied to at its last reconcile: the "before" for Shared/Unshared events,
    # fresher than status.runs, which the index only learns after our status write comes back.
    share_runs: dict[tuple[str, str], set[str]] = {}
    active_shares: set[tuple[str, str]] = set()
    work: "WorkQueue"  # set below


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
    # Short watch cycles: a connection left half-open by a restarted API server is noticed within
    # a minute and resumed from the last resourceVersion (no re-list).
    settings.watching.server_timeout = 50
    settings.watching.client_timeout = 60
    settings.watching.connect_timeout = 10
    # Memory at 10,000 runs (50,000 watched objects): kopf queues every object of its initial
    # listing to a worker of its own without back-pressure. Listing in pages lets the workers drain
    # one page while the next is fetched, and a worker idle for half a second exits (default 5 s:
    # 50,000 idle workers and their queues alive together after a start-up).
    settings.watching.chunk_size = 500
    settings.queueing.idle_timeout = 0.5
    config = Settings.from_env()
    RT.reconciler = Reconciler(Kube.from_environment(config.field_manager), config, Policy.from_env())
    log.info("toolshare operator configured: %s", config)
    prefill(RT.reconciler.kube)


# --- indexes: the cluster as the decisions need it ----------------------------------------

# Each index answers one question in O(1) per event, so nothing scans a namespace's runs or
# shares on every event (10,000 runs at restart would otherwise be quadratic).

TOOLRUNS = Source(f"/apis/{GROUP}/{VERSION}/toolruns")
RUNSHARES = Source(f"/apis/{GROUP}/{VERSION}/runshares")
_CHILDREN = f"{render.LABEL_MANAGED_BY}={render.MANAGED_BY},{render.LABEL_RUN}"


@CACHE.index("toolruns", TOOLRUNS)
def toolruns_by_ns(namespace, body, **_):
    return {namespace: CACHE.packed(body)}


@CACHE.index("toolruns", TOOLRUNS)
def toolruns_by_key(namespace, name, body, **_):
    return {(namespace, name): CACHE.packed(body)}


@CACHE.index("toolruns", TOOLRUNS)
def toolruns_by_host(body, **_):
    if RT.reconciler is None or render.validate_run(body):
        return None
    return {render.host_for(body, RT.reconciler.settings): CACHE.packed(body)}


@CACHE.index("runshares", RUNSHARES)
def runshares_by_key(namespace, name, body, **_):
    return {(namespace, name): CACHE.packed(body)}


@CACHE.index("runshares", RUNSHARES)
def runshares_by_run(namespace, spec, body, **_):
    """Shares naming one run (runRef)."""
    ref = (spec.get("runRef") or {}).get("name")
    return {(namespace, sys.intern(ref)): CACHE.packed(body)} if ref and not spec.get("runSelector") else None


@CACHE.index("runshares", RUNSHARES)
def runshares_with_selector(namespace, spec, body, **_):
    """Shares selecting runs by label: the only ones that need the namespace's runs."""
    return {namespace: CACHE.packed(body)} if spec.get("runSelector") is not None else None


def _child(namespace, labels, body):
    # The packed projection (cache.project): a Pod keeps only its metadata and status.phase (it
    # is compared by render hash; the phase feeds the run's status), other children what the
    # comparison with their desired state reads.
    return {(namespace, sys.intern(labels[render.LABEL_RUN])): CACHE.packed(body)}


# (api version, kind, plural, list path) of each child kind; only labelled children are listed.
CHILD_KINDS = (("v1", "Pod", "pods", "/api/v1/pods"), ("v1", "Service", "services", "/api/v1/services"),
               ("networking.k8s.io/v1", "Ingress", "ingresses", "/apis/networking.k8s.io/v1/ingresses"),
               ("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies",
                "/apis/networking.k8s.io/v1/networkpolicies"))


def _child_index(plural: str, path: str):
    def index(namespace, labels, body, **_):
        return _child(namespace, labels, body) if render.LABEL_RUN in labels else None

    index.__name__ = f"child_{plural}"
    return CACHE.index(plural, Source(path, _CHILDREN))(index)


for _api_version, _kind, _plural, _path in CHILD_KINDS:
    _child_index(_plural, _path)


def prefill(kube: Kube) -> None:
    """LIST every watched kind into the cache, before kopf starts any watch or handler."""
    started = time.monotonic()
    kinds = [("toolruns", f"{GROUP}/{VERSION}", "ToolRun"), ("runshares", f"{GROUP}/{VERSION}", "RunShare")]
    kinds += [(plural, api_version, kind) for api_version, kind, plural, _ in CHILD_KINDS]
    kinds += [(k, f"{GROUP}/{VERSION}", "ImageShare") for k in CACHE.sources if k == "imageshares"]
    counts = {}
    limit_malloc_arenas()  # before the write threads start
    for plural, api_version, kind in kinds:
        # Page by page: at 10,000 runs a whole LIST of Pods alone is 140 MB of parsed JSON.
        counts[plural] = sum(CACHE.fill(plural, items) for items in
                             list_pages(kube, CACHE.sources[plural], api_version, kind))
    release_memory()
    log.info("cache filled in %.1fs: %s", time.monotonic() - started, counts)


def _one(index: str, key) -> Mapping | None:
    return next(iter(RT.indexes[index].get(key, [])), None)


def _runs(namespace: str) -> dict[str, Mapping]:
    return {r["metadata"]["name"]: r for r in RT.indexes["toolruns_by_ns"].get(namespace, [])}


def _shares_for(namespace: str, run: str) -> list[Mapping]:
    """Shares that may apply to one run: those naming it, and those selecting by label."""
    return [*RT.indexes["runshares_by_run"].get((namespace, run), []),
            *RT.indexes["runshares_with_selector"].get(namespace, [])]


def _runs_for(namespace: str, run: Mapping, shares: list[Mapping]) -> dict[str, Mapping]:
    """The runs a share verdict needs: the run itself, or the namespace's if a selector is involved."""
    if any((s.get("spec") or {}).get("runSelector") is not None for s in shares):
        return _runs(namespace)
    return {run["metadata"]["name"]: run}


def share_runs(namespace: str, share: Mapping) -> dict[str, Mapping]:
    """The runs a share may apply to: the one it names (O(1)), or the namespace's for a selector.
    Admission asks the same question on every RunShare write, so it must not scan the namespace."""
    spec = share.get("spec") or {}
    if spec.get("runSelector") is not None:
        return _runs(namespace)
    ref = (spec.get("runRef") or {}).get("name")
    run = _one("toolruns_by_key", (namespace, ref)) if ref else None
    return {ref: run} if run is not None else {}


def _children(namespace: str, run: str) -> dict[tuple[str, str], Mapping]:
    out = {}
    for name in ("child_pods", "child_services", "child_ingresses", "child_networkpolicies"):
        for obj in RT.indexes[name].get((namespace, run), []):
            out[(obj["kind"], obj["metadata"]["name"])] = obj
    return out


def _host_holder(run: Mapping) -> Mapping | None:
    """The oldest run claiming this run's host, if it is another run."""
    claims = host_claims(RT.indexes["toolruns_by_host"].get(render.host_for(run, RT.reconciler.settings), []),
                         RT.reconciler.settings)
    holder = next(iter(claims.values()), None)
    if holder is None or holder["metadata"].get("uid") == run["metadata"].get("uid"):
        return None
    return holder


# --- reconciling ----------------------------------------------------------------------------

def _schedule(key: tuple, when: float, callback) -> None:
    """Run `callback` at loop time `when`, replacing a later timer for the same key."""
    loop = asyncio.get_running_loop()
    existing = RT.timers.get(key)
    # A timer that has already fired stays in RT.timers; it must not count as pending, or every
    # later retry or expiry for the same key would be dropped.
    if existing is not None and not existing.cancelled() and loop.time() < existing.when() <= when:
        return
    if existing is not None:
        existing.cancel()
    RT.timers[key] = loop.call_at(when, lambda: asyncio.ensure_future(callback()))


class WorkQueue:
    """Reconciles to do, by key, run by at most `workers` tasks at once.

    An event handler records the key and returns: kopf then drops the event's body at once, and a
    mass start (10,000 runs and shares at once, or a restart) holds 20,000 keys instead of 20,000
    half-done reconciles, each with its event body, its rendered children and a place in the
    write queue (over 1 GB at 10,000 runs, measured). A key already queued is not queued twice;
    a key changed while its reconcile runs is done again after it (it reads the cache afresh).
    """

    def __init__(self, workers: int = 32) -> None:
        self.workers = workers
        # FIFO with O(1) pops from the front (a plain dict's next(iter()) rescans deleted slots).
        self.pending: OrderedDict[tuple, Callable[[], Awaitable[None]]] = OrderedDict()
        self.active: set[tuple] = set()
        self.again: dict[tuple, Callable[[], Awaitable[None]]] = {}
        self.running = 0
        self.tasks: set[asyncio.Task] = set()
        self.trim: asyncio.TimerHandle | None = None
        self.trim_after = 3.0

    def add(self, key: tuple, work: Callable[[], Awaitable[None]]) -> None:
        if self.trim is not None:
            self.trim.cancel()
            self.trim = None
        if key in self.active:
            self.again[key] = work
            return
        self.pending[key] = work
        if self.running < self.workers:
            self.running += 1
            task = asyncio.ensure_future(self._work())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _work(self) -> None:
        try:
            while self.pending:
                key, work = self.pending.popitem(last=False)
                self.active.add(key)
                try:
                    await work()
                except Exception:  # noqa: BLE001 - one key must not stop the others
                    log.exception("reconciling %s", key)
                finally:
                    self.active.discard(key)
                    if key in self.again:
                        self.pending[key] = self.again.pop(key)
        finally:
            self.running -= 1
            if not self.running and not self.pending:
                # Once the queue has stayed empty a while, a burst (a start, a mass change) is
                # over: hand the memory it freed back to the system.
                self.trim = asyncio.get_running_loop().call_later(self.trim_after, release_memory)


RT.work = WorkQueue()


async def reconcile_run(namespace: str, name: str) -> None:
    """Queue a reconcile of one run (see WorkQueue)."""
    RT.work.add(("run", namespace, name), lambda: _reconcile_run(namespace, name))


async def _reconcile_run(namespace: str, name: str) -> None:
    # One at a time per run: the work queue never runs a key twice at once.
    rec = RT.reconciler
    run = _one("toolruns_by_key", (namespace, name))
    if run is None or run["metadata"].get("deletionTimestamp"):
        return  # the garbage collector removes the children
    holder = None if render.validate_run(run) else _host_holder(run)
    shares = _shares_for(namespace, name)
    key = ("run", namespace, name)
    started = time.perf_counter()
    try:
        await rec.reconcile_run(run, shares, _runs_for(namespace, run, shares), _children(namespace, name),
                                holder, utcnow())
        RT.backoff.pop(key, None)
        metrics.RECONCILES.labels("ToolRun", "ok").inc()
    except RetryLater:
        metrics.RECONCILES.labels("ToolRun", "retry").inc()
        _retry(key, lambda: reconcile_run(namespace, name))
    finally:
        metrics.RECONCILE_SECONDS.labels("ToolRun").observe(time.perf_counter() - started)


def _retry(key: tuple, callback) -> None:
    """Call `callback` again after a doubling delay (1 s up to 60 s) until it succeeds."""
    delay = min(RT.backoff.get(key, 0.5) * 2, 60.0)
    RT.backoff[key] = delay
    _schedule(key, asyncio.get_running_loop().time() + delay, callback)


def retry_later(key: tuple, callback, failed: bool) -> None:
    """After an attempt: schedule the next (backing off) if it failed, else reset the backoff."""
    if failed:
        _retry(key, callback)
    else:
        RT.backoff.pop(key, None)


async def reconcile_share(namespace: str, name: str) -> None:
    """Queue a reconcile of one share (see WorkQueue)."""
    RT.work.add(("share", namespace, name), lambda: _reconcile_share(namespace, name))


async def _reconcile_share(namespace: str, name: str) -> None:
    """Update one share's status, tell its runs' owners (Events), and reconcile the runs it touches."""
    rec = RT.reconciler
    share = _one("runshares_by_key", (namespace, name))
    if share is None:
        return
    runs = share_runs(namespace, share)
    old = RT.share_runs.get((namespace, name))
    if old is None:
        old = set((share.get("status") or {}).get("runs") or [])
    started = time.perf_counter()
    key = ("share-status", namespace, name)
    try:
        state = await rec.reconcile_share(share, runs, utcnow())
        RT.backoff.pop(key, None)
        metrics.RECONCILES.labels("RunShare", "ok").inc()
    except RetryLater as e:
        # Only the share's status failed to land: its runs still follow the verdict now,
        # and the status is written on a retry.
        state = e.result
        metrics.RECONCILES.labels("RunShare", "retry").inc()
        _retry(key, lambda: reconcile_share(namespace, name))
    metrics.RECONCILE_SECONDS.labels("RunShare").observe(time.perf_counter() - started)
    _count_active(namespace, name, state.reason == render.ACTIVE)
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


def _count_active(namespace: str, name: str, active: bool) -> None:
    (RT.active_shares.add if active else RT.active_shares.discard)((namespace, name))
    metrics.ACTIVE_SHARES.set(len(RT.active_shares))


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
async def on_toolrun(event, namespace, name, body, **_):
    if event["type"] is None:  # from a listing: then look for deletions it did not report
        relisted("toolruns", "toolruns_by_key", on_toolrun, RT.reconciler.kube)
    if event["type"] == "DELETED":
        CACHE.drop("toolruns", body)
        for share in _shares_for(namespace, name):
            if name in _listed_runs(share):
                await reconcile_share(namespace, share["metadata"]["name"])
        await _reconcile_host_peers(body)
        return
    before = _one("toolruns_by_key", (namespace, name))
    if not CACHE.put("toolruns", body):
        return  # older than what the cache holds
    if event["type"] == "MODIFIED" and before is not None and not _spec_changed(before, body):
        return  # a status or annotation change, most often the echo of our own status write
    await reconcile_run(namespace, name)
    # A new or relabelled run may change which shares apply (RunNotFound -> Active, selectors);
    # a share whose verdict on this run is unchanged needs nothing.
    for share in _shares_for(namespace, name):
        if (name in _listed_runs(share)) != render.share_applies_to(share, body):
            await reconcile_share(namespace, share["metadata"]["name"])


def _spec_changed(before: Mapping, after: Mapping) -> bool:
    """Whether a ToolRun event can change what is rendered: its spec (generation), labels
    (selectors) or deletion; status and annotations cannot."""
    b, a = before["metadata"], after["metadata"]
    return (b.get("generation") != a.get("generation") or (b.get("labels") or {}) != (a.get("labels") or {})
            or b.get("deletionTimestamp") != a.get("deletionTimestamp"))


def _listed_runs(share: Mapping) -> set[str]:
    key = (share["metadata"]["namespace"], share["metadata"]["name"])
    known = RT.share_runs.get(key)
    return known if known is not None else set((share.get("status") or {}).get("runs") or [])


async def _reconcile_host_peers(run: Mapping) -> None:
    """After a run goes, a later run that wanted its host may now have it."""
    settings = RT.reconciler.settings
    if render.validate_run(run):
        return
    for other in list(RT.indexes["toolruns_by_host"].get(render.host_for(run, settings), [])):
        await reconcile_run(other["metadata"]["namespace"], other["metadata"]["name"])


@kopf.on.event(GROUP, VERSION, "runshares")
async def on_runshare(event, namespace, name, body, **_):
    if event["type"] is None:
        relisted("runshares", "runshares_by_key", on_runshare, RT.reconciler.kube)
    if event["type"] == "DELETED":
        old = RT.share_runs.pop((namespace, name), None)
        if old is None:
            old = set((body.get("status") or {}).get("runs") or [])
        CACHE.drop("runshares", body)
        _count_active(namespace, name, False)
        runs = share_runs(namespace, body)
        _announce(namespace, runs, body, old, set(), "Deleted")
        timer = RT.timers.pop(("share", namespace, name), None)
        if timer:
            timer.cancel()
        for run_name in sorted(old | {n for n, r in runs.items() if render.share_applies_to(body, r)}):
            await reconcile_run(namespace, run_name)
        return
    if CACHE.put("runshares", body):
        await reconcile_share(namespace, name)


def _own_echo(body: Mapping) -> bool:
    """The watch event of a write the reconciler just made (same resourceVersion): nothing to do."""
    meta = body["metadata"]
    mine = RT.reconciler.written.objects.get((body.get("kind"), meta.get("namespace"), meta["name"], ""))
    return mine is not None and mine["metadata"].get("resourceVersion") == meta.get("resourceVersion")


def _child_handler(plural: str):
    async def on_child(event, namespace, labels, body, **_):
        if event["type"] is None:
            relisted(plural, f"child_{plural}", on_child, RT.reconciler.kube)
        if render.LABEL_RUN not in labels:
            return
        if event["type"] == "DELETED":
            CACHE.drop(plural, body)
            RT.reconciler.written.deleted(body)
        elif not CACHE.put(plural, body):
            return
        # A child changed by someone else (deleted, edited) or a Pod's phase can make a run disagree
        # with its children. The initial listing (type None) needs nothing: each run's own initial
        # event reconciles it against the cache filled at start-up.
        if event["type"] == "MODIFIED" and _own_echo(body):
            return
        if event["type"] in ("DELETED", "MODIFIED"):
            run = labels[render.LABEL_RUN]
            if _one("toolruns_by_key", (namespace, run)) is not None:
                await reconcile_run(namespace, run)

    return on_child


for _api_version, _kind, _plural, _path in CHILD_KINDS:
    kopf.on.event(*_api_version.split("/"), _plural, labels=MANAGED, id=f"child-{_plural}")(_child_handler(_plural))
