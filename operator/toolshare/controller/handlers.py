"""The controller's start and stop, and the event handlers: watch events of ToolRuns and RunShares
in, cache updates and queued reconciles out (work.py).

kopf runs the operator's start-up and clean-up (manager.py calls start and stop); it watches
nothing. The operator's own kinds are watched by plain reflectors (resources.py), its children by
others (children.py), each from the resourceVersion of the start-up LIST that filled the cache
(state/), so a restart sees the whole cluster before it decides anything and nothing is listed
twice. Every run and share is then queued for a reconcile from that cache at once; the reconciler
compares desired with actual itself, so an idle or restarted operator writes nothing at all.

A handler's event type is the watch's (ADDED, MODIFIED, DELETED), or None for an object from a
listing again after a watch could not resume (only objects whose version the cache lacks).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

from toolshare import model
from toolshare.client.kube import Kube
from toolshare.controller.children import Children
from toolshare.controller.events import Poster
from toolshare.controller.imageshares import on_imageshare, reconcile_repository
from toolshare.controller.reconcile import Reconciler
from toolshare.controller.resources import Kind, Resources
from toolshare.controller.work import RT, listed_runs, reconcile_run, reconcile_share, share_deleted
from toolshare.policy import Policy
from toolshare.settings import Settings
from toolshare.state import views
from toolshare.state.cache import CACHE

log = logging.getLogger("toolshare.handlers")
WATCHES: list[Children | Resources] = []  # the running reflectors, stopped at cleanup


async def start() -> None:
    """Fill the cache, start the watches from it, and queue every run, share and image repository
    once: what the admission hooks read is in place when this returns (manager.py)."""
    config = Settings.from_env()
    RT.reconciler = Reconciler(Kube.from_environment(config.field_manager), config, Policy.from_env())
    RT.events = Poster(RT.reconciler.kube, instance=os.environ.get("HOSTNAME") or socket.gethostname())
    RT.reconciler.events = RT.events
    log.info("toolshare operator configured: %s", config)
    views.configure(config)
    versions = await asyncio.to_thread(views.fill, RT.reconciler.kube)
    for watches in (Children(RT.reconciler.kube, versions), Resources(RT.reconciler.kube, versions, KINDS)):
        watches.start()
        WATCHES.append(watches)
    # Everything the cache holds, reconciled once: a restart's whole work. Shares go first: a
    # share's reconcile queues its runs, which are then still pending (the queue keeps one entry
    # per key), so each run is reconciled once; queued the other way round, every shared run was
    # reconciled twice (the second time by its share, after its own).
    for namespace, name in list(CACHE.views["runshares_by_key"].keys()):
        await reconcile_share(namespace, name)
    for namespace, name in list(CACHE.views["toolruns_by_key"].keys()):
        await reconcile_run(namespace, name)
    for repository in dict.fromkeys(views.image_repository(s) for s in views.imageshares()):
        await reconcile_repository(repository)


async def stop() -> None:
    for watches in WATCHES:
        await watches.stop()
    WATCHES.clear()
    if RT.events is not None:
        await RT.events.drain()


async def on_toolrun(event: str | None, body: dict) -> None:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    if event == "DELETED":
        CACHE.drop("toolruns", body)
        for share in views.shares_for(namespace, name):
            if name in listed_runs(share):
                await reconcile_share(namespace, share["metadata"]["name"])
        await _reconcile_host_peers(body)
        return
    before = views.run(namespace, name)
    if not CACHE.put("toolruns", body):
        return  # older than what the cache holds
    if event == "MODIFIED" and before is not None and not _spec_changed(before, body):
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


async def on_runshare(event: str | None, body: dict) -> None:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    if event == "DELETED":
        CACHE.drop("runshares", body)
        await share_deleted(namespace, name, body)
        return
    if CACHE.put("runshares", body):
        await reconcile_share(namespace, name)


def _imageshare(namespace: str, name: str) -> Mapping | None:
    return next((s for s in views.imageshares()
                 if (s["metadata"].get("namespace"), s["metadata"]["name"]) == (namespace, name)), None)


KINDS = [Kind("toolruns", "ToolRun", "toolruns_by_key", on_toolrun, views.run),
         Kind("runshares", "RunShare", "runshares_by_key", on_runshare, views.share),
         Kind("imageshares", "ImageShare", "imageshares_all", on_imageshare, _imageshare)]
