"""Events the operator posts on its runs (Shared, Unshared, ShareExpired), through its own client.

Not kopf.event: that needs kopf's per-handler context, and reconciles run in the work queue's
workers, which may be started from anywhere (a start-up reconcile, a child watch, a timer). An
Event is posted in the background so a share's reconcile never waits for it, and a failed post is
logged and counted, never retried: an Event is a notice, the status is the record.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping

from toolshare.client.kube import ApiError, Kube
from toolshare.controller import metrics

log = logging.getLogger("toolshare.events")
COMPONENT = "toolshare"
MAX_MESSAGE = 1024  # what kubectl describe and the API server's Event validation keep


def event_body(obj: Mapping, type_: str, reason: str, message: str, now: dt.datetime,
               instance: str = "") -> dict:
    """A core/v1 Event about `obj` (its uid and resourceVersion pin it to this object).

    The API server refuses an Event with an eventTime and a reportingComponent but no
    reportingInstance (422), so an unnamed instance reports as the component."""
    meta = obj["metadata"]
    stamp = now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    micro = now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", ""),
                           "name": meta["name"], "namespace": meta["namespace"],
                           "uid": meta.get("uid", ""), "resourceVersion": meta.get("resourceVersion", "")},
        "type": type_, "reason": reason, "message": message[:MAX_MESSAGE],
        "source": {"component": COMPONENT}, "reportingComponent": COMPONENT, "reportingInstance": instance or COMPONENT,
        "firstTimestamp": stamp, "lastTimestamp": stamp, "eventTime": micro, "count": 1, "action": reason,
    }


class Poster:
    """Posts Events in the background; `drain` waits for those in flight (shutdown, tests)."""

    def __init__(self, kube: Kube, instance: str = ""):
        self.kube, self.instance = kube, instance
        self.pending: set[asyncio.Task] = set()

    def post(self, obj: Mapping, type_: str, reason: str, message: str) -> None:
        body = event_body(obj, type_, reason, message, dt.datetime.now(dt.timezone.utc), self.instance)
        task = asyncio.get_running_loop().create_task(self._send(body))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _send(self, body: dict) -> None:
        path = f"/api/v1/namespaces/{body['metadata']['namespace']}/events"
        try:
            await self.kube.arequest("POST", path, body=body, kind="Event")
        except ApiError as e:  # the namespace is going, the API server is away: a notice is lost
            metrics.EVENTS_LOST.inc()
            log.warning("could not post %s Event on %s/%s: %s", body["reason"],
                        body["metadata"]["namespace"], body["involvedObject"]["name"], e.status_message[:200])

    async def drain(self) -> None:
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)
