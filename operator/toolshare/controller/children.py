"""The operator's watches of its children (Pods, Services, routes, NetworkPolicies): plain
list/watch reflectors (client/watch.py), not kopf.

Children are most of what the operator watches (four or more per run: 40,000 objects at 10,000
runs) and nothing about them needs kopf: no handler state, no patches, no admission. Through kopf,
each event went through its per-object machinery, and every restart replayed every listed child
as an event; here a child event is a cache update and, when someone else changed or deleted a
child, one queued reconcile of its run. Each reflector starts watching from the resourceVersion of
the start-up LIST that filled the cache (views.fill), so nothing is listed twice; when a watch
cannot resume (410, or any failure) it lists again, page by page into the cache, and reconciles
the runs whose children changed, came or went meanwhile (deletions no watch reported included).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from toolshare import model
from toolshare.client.config import ApiConfig
from toolshare.client.watch import Reflectors
from toolshare.controller import metrics
from toolshare.controller.work import RT, reconcile_run
from toolshare.state import views
from toolshare.state.cache import CACHE, list_pages, project

log = logging.getLogger("toolshare.children")
# The operator's watches (these and resources.py's) end after 50 s and resume from their version
# (as kopf's did), so a connection left half-open is noticed within a minute; each resume is one
# cheap request.
WATCH_TIMEOUT = 50
# Children whose status another controller writes and no decision reads: a Gateway controller
# rewrites every HTTPRoute's status.parents on each change of its Gateway (Envoy Gateway does the
# same to SecurityPolicies). Such a write is not a reason to reconcile the run.
STATUS_OF_OTHERS = frozenset(plural for _, _, plural, _ in views.GATEWAY_KINDS)


def _own_echo(body: Mapping) -> bool:
    """The watch event of a write the reconciler just made (same resourceVersion): nothing to do."""
    meta = body["metadata"]
    mine = RT.reconciler.written.objects.get((body.get("kind"), meta.get("namespace"), meta["name"], ""))
    return mine is not None and mine["metadata"].get("resourceVersion") == meta.get("resourceVersion")


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


async def child_event(plural: str, kind: str, event: str, body: dict) -> None:
    """One watch event of a child: the cache, then the run if someone else changed its children."""
    body.setdefault("kind", kind)
    meta = body.get("metadata") or {}
    labels, namespace = meta.get("labels") or {}, meta.get("namespace")
    if model.LABEL_RUN not in labels:
        return
    run = labels[model.LABEL_RUN]
    before = (_cached_child(plural, namespace, run, meta.get("uid"))
              if event == "MODIFIED" and plural in STATUS_OF_OTHERS else None)
    if event == "DELETED":
        CACHE.drop(plural, body)
        RT.reconciler.written.deleted(body)
    elif not CACHE.put(plural, body):
        return  # older than what the cache holds
    # A child changed by someone else (deleted, edited) or a Pod's phase can make a run disagree
    # with its children; a new child (ADDED) is the echo of our own create.
    if event == "MODIFIED" and (_own_echo(body) or (before is not None and _status_only(before, body))):
        return
    if event in ("DELETED", "MODIFIED") and views.run(namespace, run) is not None:
        await reconcile_run(namespace, run)


class Children:
    """One reflector per watched child kind, started from the versions views.fill listed at."""

    def __init__(self, kube, versions: Mapping[str, str]):
        self.kube = kube
        self.versions = dict(versions)
        self.watches: Reflectors | None = None

    def start(self) -> None:
        self.watches = Reflectors(ApiConfig.of(self.kube.api.configuration), WATCH_TIMEOUT)
        for api_version, kind, plural, _ in views.ACTIVE_CHILD_KINDS:
            source = CACHE.sources[plural]

            async def on_event(event: str, body: dict, plural=plural, kind=kind) -> None:
                await child_event(plural, kind, event, body)

            async def relist(plural=plural, api_version=api_version, kind=kind) -> str:
                return await self._relist(plural, api_version, kind)

            self.watches.run(plural, source.path, source.label_selector, on_event=on_event,
                             on_failure=metrics.WATCH_FAILURES.labels(kind).inc,
                             resource_version=self.versions.get(plural, ""), lister=relist)
        log.info("child watches start from the start-up listing: %s",
                 ", ".join(f"{plural}@{version}" for plural, version in sorted(self.versions.items())
                           if plural in self.watches.reflectors))

    async def _relist(self, plural: str, api_version: str, kind: str) -> str:
        """List one kind again (its watch could not resume): into the cache page by page, then a
        reconcile of every run whose children of that kind changed, came or went."""
        listed: dict = {}
        pages = list_pages(self.kube, CACHE.sources[plural], api_version, kind, listed=listed)
        replacing = CACHE.replacing(plural)
        # Each page is fetched in a thread and stored here, in the event loop: the cache is the
        # loop's alone.
        while (items := await asyncio.to_thread(next, pages, None)) is not None:
            replacing.page(items)
        touched = replacing.finish()
        runs = {key for view, key in touched if view == f"child_{plural}"}
        log.info("listed %s again at resourceVersion %s: %d runs to look at", plural,
                 listed.get("resourceVersion"), len(runs))
        for namespace, run in sorted(runs):
            if views.run(namespace, run) is not None:
                await reconcile_run(namespace, run)
        return listed.get("resourceVersion", "")

    async def stop(self) -> None:
        if self.watches is not None:
            await self.watches.stop()
