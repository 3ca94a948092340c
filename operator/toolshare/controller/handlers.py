"""kopf wiring: watch events in, cache updates and queued reconciles out (work.py).

Handlers are `on.event`, not `on.create/update`: kopf then keeps no progress or diff-base
annotations, so an idle or restarted operator writes nothing at all; the reconciler compares
desired with actual itself. The cache (state/) is filled by a LIST at start-up before any handler
runs, so a restart sees the whole cluster before it decides anything.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import kopf

from toolshare import model
from toolshare.client.kube import Kube
from toolshare.controller.reconcile import Reconciler
from toolshare.controller.work import RT, listed_runs, reconcile_run, reconcile_share, share_deleted
from toolshare.policy import Policy
from toolshare.settings import Settings
from toolshare.state import views
from toolshare.state.cache import CACHE, project
from toolshare.state.relist import relisted

log = logging.getLogger("toolshare.handlers")
MANAGED = {model.LABEL_MANAGED_BY: model.MANAGED_BY}
# Children whose status another controller writes and no decision reads: a Gateway controller
# rewrites every HTTPRoute's status.parents on each change of its Gateway (Envoy Gateway does the
# same to SecurityPolicies). Such a write is not a reason to reconcile the run.
STATUS_OF_OTHERS = frozenset(plural for _, _, plural, _ in views.GATEWAY_KINDS)


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
    views.configure(config)
    views.fill(RT.reconciler.kube)


@kopf.on.event(model.GROUP, model.VERSION, "toolruns")
async def on_toolrun(event, namespace, name, body, **_):
    if event["type"] is None:  # from a listing: then look for deletions it did not report
        relisted("toolruns", "toolruns_by_key", on_toolrun, RT.reconciler.kube)
    if event["type"] == "DELETED":
        CACHE.drop("toolruns", body)
        for share in views.shares_for(namespace, name):
            if name in listed_runs(share):
                await reconcile_share(namespace, share["metadata"]["name"])
        await _reconcile_host_peers(body)
        return
    before = views.run(namespace, name)
    if not CACHE.put("toolruns", body):
        return  # older than what the cache holds
    if event["type"] == "MODIFIED" and before is not None and not _spec_changed(before, body):
        return  # a status or annotation change, most often the echo of our own status write
    await reconcile_run(namespace, name)
    # A new or relabelled run may change which shares apply (RunNotFound -> Active, selectors);
    # a share whose verdict on this run is unchanged needs nothing.
    for share in views.shares_for(namespace, name):
        if (name in listed_runs(share)) != model.share_applies_to(share, body):
            await reconcile_share(namespace, share["metadata"]["name"])


def _spec_changed(before: Mapping, after: Mapping) -> bool:
    """Whether a ToolRun event can change what is rendered: its spec (generation), labels
    (selectors) or deletion; status and annotations cannot."""
    b, a = before["metadata"], after["metadata"]
    return (b.get("generation") != a.get("generation") or (b.get("labels") or {}) != (a.get("labels") or {})
            or b.get("deletionTimestamp") != a.get("deletionTimestamp"))


async def _reconcile_host_peers(run: Mapping) -> None:
    """After a run goes, a later run that wanted its host may now have it."""
    if model.validate_run(run):
        return
    for other in list(views.runs_on_host(model.host_for(run, RT.reconciler.settings))):
        await reconcile_run(other["metadata"]["namespace"], other["metadata"]["name"])


@kopf.on.event(model.GROUP, model.VERSION, "runshares")
async def on_runshare(event, namespace, name, body, **_):
    if event["type"] is None:
        relisted("runshares", "runshares_by_key", on_runshare, RT.reconciler.kube)
    if event["type"] == "DELETED":
        CACHE.drop("runshares", body)
        await share_deleted(namespace, name, body)
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
        if model.LABEL_RUN not in labels:
            return
        before = (_cached_child(plural, namespace, labels[model.LABEL_RUN], body["metadata"].get("uid"))
                  if event["type"] == "MODIFIED" and plural in STATUS_OF_OTHERS else None)
        if event["type"] == "DELETED":
            CACHE.drop(plural, body)
            RT.reconciler.written.deleted(body)
        elif not CACHE.put(plural, body):
            return
        # A child changed by someone else (deleted, edited) or a Pod's phase can make a run disagree
        # with its children. The initial listing (type None) needs nothing: each run's own initial
        # event reconciles it against the cache filled at start-up.
        if event["type"] == "MODIFIED" and (_own_echo(body) or (before is not None and _status_only(before, body))):
            return
        if event["type"] in ("DELETED", "MODIFIED"):
            run = labels[model.LABEL_RUN]
            if views.run(namespace, run) is not None:
                await reconcile_run(namespace, run)

    return on_child


def _cached_child(plural: str, namespace: str, run: str, uid: str | None) -> Mapping | None:
    """The cache's copy of one child (its projection), before an event replaces it."""
    for obj in CACHE.views[f"child_{plural}"].get((namespace, run), []):
        if obj["metadata"].get("uid") == uid:
            return obj
    return None


def _status_only(before: Mapping, body: Mapping) -> bool:
    """Whether a MODIFIED child differs from the cached copy in nothing the cache keeps (identity,
    labels, annotations, owners, spec: cache.project) but its resourceVersion, i.e. in its status."""
    def kept(obj: Mapping) -> dict:
        return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}}

    return kept(before) == kept(project(body))


# One handler per child kind the operator watches: views.configure_kinds decided them before this
# module was imported (manager.py), so no handler is registered for a CRD that is not installed.
for _api_version, _kind, _plural, _path in views.ACTIVE_CHILD_KINDS:
    kopf.on.event(*_api_version.split("/"), _plural, labels=MANAGED, id=f"child-{_plural}")(_child_handler(_plural))
