"""kopf wiring: watch events of ToolRuns and RunShares in, cache updates and queued reconciles
out (work.py). Children are watched by plain reflectors (children.py), not kopf.

Handlers are `on.event`, not `on.create/update`: kopf then keeps no progress or diff-base
annotations, so an idle or restarted operator writes nothing at all; the reconciler compares
desired with actual itself. The cache (state/) is filled by a LIST at start-up before any handler
runs, so a restart sees the whole cluster before it decides anything; every run and share is then
queued for a reconcile from that cache at once, and kopf's own replay of its listing (the same
versions) only looks for deletions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

import kopf

from toolshare import model
from toolshare.client.kube import Kube
from toolshare.controller.children import Children
from toolshare.controller.events import Poster
from toolshare.controller.reconcile import Reconciler
from toolshare.controller.work import RT, listed_runs, reconcile_run, reconcile_share, share_deleted
from toolshare.policy import Policy
from toolshare.settings import Settings
from toolshare.state import views
from toolshare.state.cache import CACHE
from toolshare.state.relist import relisted

log = logging.getLogger("toolshare.handlers")
CHILDREN: list[Children] = []  # the running reflectors, stopped at cleanup


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_) -> None:
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
    RT.events = Poster(RT.reconciler.kube, instance=os.environ.get("HOSTNAME") or socket.gethostname())
    RT.reconciler.events = RT.events
    log.info("toolshare operator configured: %s", config)
    views.configure(config)
    versions = await asyncio.to_thread(views.fill, RT.reconciler.kube)
    children = Children(RT.reconciler.kube, versions)
    children.start()
    CHILDREN.append(children)
    # Reconcile from the cache now, not once kopf has replayed its own listing of every object.
    for namespace, name in list(CACHE.views["toolruns_by_key"].keys()):
        await reconcile_run(namespace, name)
    for namespace, name in list(CACHE.views["runshares_by_key"].keys()):
        await reconcile_share(namespace, name)


@kopf.on.cleanup()
async def stop_watches(**_) -> None:
    for children in CHILDREN:
        await children.stop()
    CHILDREN.clear()
    if RT.events is not None:
        await RT.events.drain()


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
    if event["type"] is None and _held(before, body):
        return  # kopf's listing replays what the start-up cache held: reconciled from it already
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
    if event["type"] is None and _held(views.share(namespace, name), body):
        return
    if CACHE.put("runshares", body):
        await reconcile_share(namespace, name)


def _held(cached: Mapping | None, body: Mapping) -> bool:
    return cached is not None and cached["metadata"].get("resourceVersion") == body["metadata"].get("resourceVersion")
