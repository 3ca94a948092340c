"""Deletions no watch reported: found after kopf lists a kind again.

When a watch cannot resume where it stopped (410 Gone: after kube-apiserver or etcd restarts, or a
long disconnect), kopf lists the kind again and replays every listed object as an event of type
None. An object deleted while no watch was open is simply absent from that list: no DELETED event
ever comes for it, and the cache would keep it for good (a deleted RunShare's users stay on the
Ingress; a deleted child is never re-created).

So every listing (kopf's first one too: an object deleted between the start-up prefill and kopf's
own listing is the same case) is followed, once its events have settled, by a LIST of the kind's
uids (metadata only). Whatever the cache holds that this list lacks, and that is not newer than the
list, was deleted: it is handed to the kind's own event handler as a DELETED event.

Why this is safe: the check's LIST starts after kopf's listing was received, so it is at least as
new. An object it lacks whose cached resourceVersion is not newer than it was deleted by then; an
object created since carries a newer resourceVersion and is kept. An event of kopf's listing still
queued for a deleted object may put it back, but kopf's watch resumes from that listing's version
and so delivers the DELETED that follows it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from toolshare.client.kube import ApiError
from toolshare.state.cache import CACHE, Source, View

log = logging.getLogger("toolshare.relist")

DELAY = 1.0  # after the listing's last event: one LIST per listing, not one per object
RETRY = 5.0  # when the check's own LIST fails (the API server away again)
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"

Handler = Callable[..., Awaitable[None]]
_pending: dict[str, asyncio.TimerHandle] = {}
_tasks: set[asyncio.Task] = set()


def list_uids(kube, source: Source, page: int = 1000) -> tuple[set[str], int]:
    """The uids of every object of one kind and the resourceVersion they were listed at (the pages
    of a paginated LIST share the first page's version). Metadata only: cheap even for Pods."""
    uids: set[str] = set()
    version, token = None, ""
    while True:
        query = [("limit", str(page))]
        if source.label_selector:
            query.append(("labelSelector", source.label_selector))
        if token:
            query.append(("continue", token))
        method, url, headers, _, _ = kube.api.param_serialize("GET", source.path, query_params=query,
                                                              header_params={"Accept": METADATA_LIST},
                                                              auth_settings=["BearerToken"])
        resp = kube.api.call_api(method, url, header_params=headers, _request_timeout=30)
        data = resp.read()
        if resp.status != 200:
            raise ApiError(resp.status, data.decode(errors="replace") if data else "")
        listing = json.loads(data)
        meta = listing.get("metadata") or {}
        version = int(meta["resourceVersion"]) if version is None else version
        uids.update(item["metadata"]["uid"] for item in listing.get("items") or [])
        token = meta.get("continue") or ""
        if not token:
            return uids, version


def _version(obj: Mapping) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


def vanished(view: View, listed: set[str], version: int) -> list[Mapping]:
    """The objects in `view` (one holding every object of its kind) that a LIST at `version` with
    uids `listed` lacks and that are not newer than that LIST."""
    out: dict[str, Mapping] = {}
    for key, found in list(view.data.items()):
        if set(found) <= listed:
            continue
        for obj in view.get(key):
            uid = obj["metadata"]["uid"]
            if uid not in listed and _version(obj) <= version:
                out[uid] = obj
    return list(out.values())


def relisted(kind: str, view: str, handler: Handler, kube, delay: float = DELAY) -> None:
    """An object of `kind` came from a listing (event type None): check the cache's `view` for
    unreported deletions `delay` seconds after the listing's last event."""
    pending = _pending.pop(kind, None)
    if pending is not None:
        pending.cancel()

    def start() -> None:
        task = asyncio.ensure_future(check(kind, view, handler, kube))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)

    _pending[kind] = asyncio.get_running_loop().call_later(delay, start)


async def check(kind: str, view: str, handler: Handler, kube) -> None:
    _pending.pop(kind, None)  # a listing that starts from now on gets a check of its own
    try:
        listed, version = await asyncio.to_thread(list_uids, kube, CACHE.sources[kind])
    except Exception as e:  # noqa: BLE001 - most likely the API server away again: check later
        log.warning("listing %s to find unreported deletions failed (%s); again in %.0fs", kind, e, RETRY)
        if kind not in _pending:
            relisted(kind, view, handler, kube, RETRY)
        return
    gone = vanished(CACHE.views[view], listed, version)
    if not gone:
        return
    log.info("%d %s deleted while no watch was open (listed at resourceVersion %s): %s", len(gone), kind, version,
             ", ".join(f"{o['metadata'].get('namespace')}/{o['metadata'].get('name')}" for o in gone[:10]))
    for obj in gone:
        meta = obj["metadata"]
        try:
            await handler(event={"type": "DELETED", "object": obj}, namespace=meta.get("namespace"),
                          name=meta["name"], labels=meta.get("labels") or {}, body=obj)
        except Exception:  # noqa: BLE001 - one object must not keep the others in the cache
            log.exception("handling the unreported deletion of %s %s/%s", kind, meta.get("namespace"), meta["name"])
            CACHE.drop(kind, obj)
