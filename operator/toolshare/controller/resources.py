"""The operator's watches of its own kinds (ToolRuns, RunShares, ImageShares): plain list/watch
reflectors (client/watch.py), as children.py has for the children. kopf serves only the webhooks.

Through kopf each event went through its per-object machinery (a deep copy of the body for a
diff-base even with `on.event` handlers only, cause detection, a worker task per object): a quarter
of the operator's busy CPU per share change at 10,000 runs (BENCHMARKS.md), and a restart replayed every
listed object as an event once more. Here an event is one call of the kind's handler (handlers.py,
imageshares.py), in the order the watch delivers them.

Each reflector starts from the resourceVersion of the start-up LIST that filled the cache
(views.fill), so nothing is listed twice. When a watch cannot resume (410 Gone after an API server
or etcd restart, or any failure), the kind is listed again page by page: every listed object the
cache holds at another resourceVersion goes to the handler as a listed event (type None), and every
cached object the list lacks and that is not newer than it was deleted while no watch was open
(state/relist.vanished): it goes to the handler as DELETED.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from toolshare import model
from toolshare.client.config import ApiConfig
from toolshare.client.watch import Reflectors
from toolshare.controller.children import WATCH_TIMEOUT
from toolshare.controller import metrics
from toolshare.state.cache import CACHE, list_pages
from toolshare.state.relist import vanished

log = logging.getLogger("toolshare.resources")

# event type ("ADDED", "MODIFIED", "DELETED", or None for an object from a listing), body
Handler = Callable[[str | None, dict], Awaitable[None]]


class Kind:
    """One watched kind: `view` holds every object of it (for vanished), `cached` finds one."""

    def __init__(self, plural: str, kind: str, view: str, handler: Handler,
                 cached: Callable[[str, str], Mapping | None]):
        self.plural, self.kind, self.view, self.handler, self.cached = plural, kind, view, handler, cached


class Resources:
    """One reflector per kind of the operator's own, started from the versions views.fill listed at."""

    def __init__(self, kube, versions: Mapping[str, str], kinds: list[Kind]):
        self.kube = kube
        self.versions = dict(versions)
        self.kinds = kinds
        self.watches: Reflectors | None = None

    def start(self) -> None:
        self.watches = Reflectors(ApiConfig.of(self.kube.api.configuration), WATCH_TIMEOUT)
        for kind in self.kinds:
            async def on_event(event: str, body: dict, kind=kind) -> None:
                body.setdefault("apiVersion", model.API_VERSION)
                body.setdefault("kind", kind.kind)
                await _handle(kind, event, body)

            async def relist(kind=kind) -> str:
                return await self._relist(kind)

            self.watches.run(kind.plural, CACHE.sources[kind.plural].path, on_event=on_event,
                             on_failure=metrics.WATCH_FAILURES.labels(kind.kind).inc,
                             resource_version=self.versions.get(kind.plural, ""), lister=relist)
        log.info("watches of %s start from the start-up listing: %s", ", ".join(k.plural for k in self.kinds),
                 ", ".join(f"{k.plural}@{self.versions.get(k.plural, '')}" for k in self.kinds))

    async def _relist(self, kind: Kind) -> str:
        """List one kind again: changed objects to the handler as listed, vanished ones as DELETED."""
        listed: dict = {}
        uids: set[str] = set()
        changed = 0
        pages = list_pages(self.kube, CACHE.sources[kind.plural], model.API_VERSION, kind.kind, listed=listed)
        while (items := await asyncio.to_thread(next, pages, None)) is not None:
            for item in items:
                uids.add(item["metadata"]["uid"])
                if not _held(kind, item):
                    changed += 1
                    await _handle(kind, None, item)
        version = listed.get("resourceVersion", "")
        gone = vanished(CACHE.views[kind.view], uids, int(version or 0))
        log.info("listed %s again at resourceVersion %s: %d changed, %d deleted while no watch was open",
                 kind.plural, version, changed, len(gone))
        for obj in gone:
            await _handle(kind, "DELETED", dict(obj))
        return version

    async def stop(self) -> None:
        if self.watches is not None:
            await self.watches.stop()


async def _handle(kind: Kind, event: str | None, body: dict) -> None:
    """One event to its handler. A handler that fails is logged and the watch goes on (as kopf
    did): one object must not hold up every other of its kind. What failed grants nothing: a
    deletion is dropped from the cache anyway, and a cache update that fails holds no object."""
    try:
        await kind.handler(event, body)
    except Exception:  # noqa: BLE001
        meta = body.get("metadata") or {}
        log.exception("Handler %r failed with an exception on %s %s %s/%s", kind.handler.__name__, event or "LISTED",
                      kind.kind, meta.get("namespace"), meta.get("name"))
        if event == "DELETED":
            CACHE.drop(kind.plural, body)


def _held(kind: Kind, item: Mapping) -> bool:
    """Whether the cache holds this very version of the object already."""
    meta = item["metadata"]
    cached = kind.cached(meta.get("namespace"), meta["name"])
    return cached is not None and cached["metadata"].get("resourceVersion") == meta.get("resourceVersion")
