"""Reconcile one ToolRun, or one RunShare's status, from what the cache holds.

The handlers keep the cluster's state in state/'s views (no list calls on events); this module turns
that state into writes: render the desired children with the pure renderer, compare them with
the actual children, and write only the difference. An unchanged run costs zero requests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from toolshare import access, model, podtemplate, render
from toolshare.client.kube import ApiError, Kube
from toolshare.conditions import contains, set_condition
from toolshare.policy import Policy
from toolshare.settings import Settings
from toolshare.state.cache import CACHE, project_owned

log = logging.getLogger("toolshare.reconcile")

ANN_HASH = "toolshare.dev/render-hash"
# Every kind of child the reconciler deletes when it is not desired: both routing families', so that
# a change of TOOLSHARE_ROUTING or TOOLSHARE_GATEWAY_AUTH removes the other family's (the views list
# them when they are served: state/views.configure_kinds).
CHILD_KINDS = ("Pod", "Service", "Ingress", "NetworkPolicy", "HTTPRoute", "Middleware", "SecurityPolicy")
# What routes an endpoint (answers on its host), and what lets a route call the gate.
ROUTE_KINDS = ("Ingress", "HTTPRoute")
AUTH_KINDS = ("Middleware", "SecurityPolicy")
ROUTE_CHILD_KINDS = frozenset(ROUTE_KINDS + AUTH_KINDS)


# Where orjson's canonical JSON may differ from the stdlib's: non-ASCII and DEL (which the stdlib
# escapes), and small floats (1e-05 against 0.00001). Matches inside strings only cost the fallback.
# The definition; _maybe_not_stdlib answers the same question ten times faster (the regex, with no
# literal to skip ahead by, was 24 of render_hash's 27 us; tests/unit/test_render_hash.py).
_NOT_STDLIB_BYTES = re.compile(rb"[0-9]e-|0\.0000|[\x7f-\xff]")


def _maybe_not_stdlib(text: bytes) -> bool:
    """Whether _NOT_STDLIB_BYTES matches `text`."""
    if not text.isascii() or b"\x7f" in text or b"0.0000" in text:
        return True
    at = text.find(b"e-", 1)
    while at != -1:
        if 48 <= text[at - 1] <= 57:  # a digit before the "e-"
            return True
        at = text.find(b"e-", at + 2)
    return False


def render_hash(obj: Mapping) -> str:
    """The hash stamped on a child (ANN_HASH), of its canonical JSON as the stdlib writes it (sorted
    keys, no spaces, non-ASCII escaped). orjson writes the same bytes five times faster except where
    _NOT_STDLIB_BYTES finds a difference possible; then the stdlib does, so every stamped hash stays
    as it was (tests/unit/test_render_hash.py)."""
    try:
        text = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # what orjson will not write (a non-string key, an integer beyond 64 bits)
        text = None
    if text is None or _maybe_not_stdlib(text):
        text = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(text).hexdigest()[:16]


def owner_reference(run: Mapping) -> dict:
    return {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun", "name": run["metadata"]["name"],
            "uid": run["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def finish_child(child: Mapping, run: Mapping) -> dict:
    """Stamp ownership and the render hash (of the object before stamping) on a desired child: a
    new object and metadata; the rest is shared with `child` (nothing here changes it)."""
    digest = render_hash(child)
    meta = child["metadata"]
    return {**child, "metadata": {**meta, "ownerReferences": [owner_reference(run)],
                                  "annotations": {**(meta.get("annotations") or {}), ANN_HASH: digest}}}


def child_key(obj: Mapping) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def needs_write(desired: Mapping, actual: Mapping | None) -> bool:
    """A child needs a write if missing, rendered differently, or drifted from what we set."""
    if actual is None:
        return True
    if (actual.get("metadata", {}).get("annotations") or {}).get(ANN_HASH) != desired["metadata"]["annotations"][ANN_HASH]:
        return True
    if desired["kind"] == "Pod":  # immutable spec, server-filled defaults: the hash decides
        return False
    return not contains(actual, {k: v for k, v in desired.items() if k != "status"})


@dataclass
class Written:
    """Objects we wrote whose watch event has not reached the index yet (read-your-writes).

    Without this, a second event arriving before our own write's echo would compare against the
    stale indexed copy and write the same thing again. Each is kept as the cache keeps objects
    (cache.project: what the comparisons read) and only until the cache holds its echo: a sweep,
    each time the overlay has doubled, drops the writes the cache has caught up with (and any
    older than `max_age`, whose object is gone), so 50,000 writes at start-up do not stay here.
    """

    objects: dict[tuple[str, str, str, str], dict] = field(default_factory=dict)
    version: Callable[[str], int] = CACHE.version  # uid -> the resourceVersion the cache holds
    max_age: float = 300.0
    _at: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    _sweep_at: int = 1024
    # Children we deleted whose DELETED event has not reached the cache yet: key -> uid. A reconcile
    # in between (queued by the event of another child deleted just before) must not delete them again.
    _gone: dict[tuple[str, str, str, str], str] = field(default_factory=dict)

    @staticmethod
    def key(obj: Mapping) -> tuple[str, str, str, str]:
        return obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"], ""

    def remember(self, obj: Mapping) -> None:
        """`obj` is a write's answer, handed over: kept without a copy (project_owned)."""
        key = self.key(obj)
        self.objects[key] = project_owned(obj)
        self._at[key] = time.monotonic()
        if len(self.objects) >= self._sweep_at:
            self.sweep()

    def forget(self, obj: Mapping) -> None:
        self.objects.pop(self.key(obj), None)
        self._at.pop(self.key(obj), None)

    def deleted(self, obj: Mapping) -> None:
        """The object is gone: our last write of it must not stand in for it. Without this, a
        child deleted while its write's echo was lost (a watch broken by an API server restart,
        then a re-list without it) looked present to newest() and was never re-created."""
        mine = self.objects.get(self.key(obj))
        uid = (obj.get("metadata") or {}).get("uid")
        if mine is not None and (not uid or mine["metadata"].get("uid") in (None, uid)):
            self.forget(obj)
        if self._gone.get(self.key(obj)) == uid:
            del self._gone[self.key(obj)]

    def deleting(self, obj: Mapping) -> None:
        """We deleted `obj` (as the cache holds it): until its DELETED event drops it from the
        cache, `already_deleted` says so."""
        uid = (obj.get("metadata") or {}).get("uid")
        if uid and self.version(uid):  # else the cache has dropped it already: no event to wait for
            self._gone[self.key(obj)] = uid

    def already_deleted(self, obj: Mapping) -> bool:
        uid = (obj.get("metadata") or {}).get("uid")
        return uid is not None and self._gone.get(self.key(obj)) == uid

    def sweep(self) -> None:
        """Drop the writes whose echo the cache holds (newest() would prefer the cache's copy)."""
        old = time.monotonic() - self.max_age
        for key, obj in list(self.objects.items()):
            meta = obj["metadata"]
            try:
                caught_up = self.version(meta.get("uid") or "") >= int(meta["resourceVersion"])
            except (KeyError, ValueError):
                caught_up = True
            if caught_up or self._at.get(key, 0) < old:
                del self.objects[key]
                self._at.pop(key, None)
        for key, uid in list(self._gone.items()):
            if not self.version(uid):  # the cache has dropped it
                del self._gone[key]
        self._sweep_at = max(2 * len(self.objects), 1024)

    def newest(self, indexed: Mapping | None, desired_key) -> Mapping | None:
        """The fresher of the indexed object and our own last write of it."""
        mine = self.objects.get(desired_key)
        if mine is None:
            return indexed
        if indexed is None:
            return mine
        try:
            if int(indexed["metadata"]["resourceVersion"]) >= int(mine["metadata"]["resourceVersion"]):
                self.objects.pop(desired_key, None)
                self._at.pop(desired_key, None)
                return indexed
        except (KeyError, ValueError):
            return indexed
        return mine


@dataclass
class Reconciler:
    kube: Kube
    settings: Settings
    policy: Policy = field(default_factory=Policy)
    written: Written = field(default_factory=Written)  # one reconcile per key at a time: workqueue.WorkQueue
    events: Any = None  # controller/events.Poster (post(obj, type, reason, message)); None: no Events

    async def reconcile_run(self, run: Mapping, shares: list[Mapping], runs_by_name: Mapping[str, Mapping],
                            children: Mapping[tuple[str, str], Mapping], host_owner: Mapping | None,
                            now: dt.datetime) -> dict:
        """Bring one run's children and status in line; return the new status (for events)."""
        run = self.written.newest(run, Written.key(run))
        ns, name = run["metadata"]["namespace"], run["metadata"]["name"]
        generation = run["metadata"].get("generation")
        status = dict(run.get("status") or {})
        conditions = status.get("conditions") or []
        problems = [*model.validate_run(run, self.policy.reserved_names),
                    *podtemplate.template_problems(run, self.policy.allowed_host_paths)]
        if problems:
            conditions = set_condition(conditions, "Ready", False, "InvalidSpec", "; ".join(problems), generation, now)
            desired = []
        elif host_owner is not None:
            other = f"{host_owner['metadata']['namespace']}/{host_owner['metadata']['name']}"
            msg = (f"host {model.host_for(run, self.settings)} is already used by ToolRun {other}; "
                   "choose another spec.friendlyName")
            conditions = set_condition(conditions, "Ready", False, "FriendlyNameConflict", msg, generation, now)
            desired = [finish_child(c, run) for c in render.render_children(run, shares, self.settings, now, runs_by_name, self.policy)
                       if c["kind"] not in ROUTE_CHILD_KINDS]  # never take over another run's host
        else:
            desired = [finish_child(c, run) for c in render.render_children(run, shares, self.settings, now, runs_by_name, self.policy)]
            conditions = None  # set after the writes succeed

        failed = None
        pod_refused = ""  # the API server's answer to the Pod's write (a Pod Security violation...)
        wanted = {child_key(c) for c in desired}
        # Endpoints whose auth object (Middleware, SecurityPolicy) could not be written: their route
        # is not written either (an Envoy Gateway route without its SecurityPolicy is served without
        # the gate). The renderer puts auth objects before the routes, so one pass decides.
        blocked: set[str] = set()
        # A route that is not as desired (its write failed or was blocked, its delete failed) may
        # still rely on an auth object that is no longer desired: then no auth object is deleted.
        routes_unsettled = False
        for child in desired:
            key = child_key(child)
            wkey = (child["kind"], ns, child["metadata"]["name"], "")
            actual = self.written.newest(children.get(key), wkey)
            if not needs_write(child, actual):
                continue
            endpoint = (child["metadata"].get("labels") or {}).get(model.LABEL_ENDPOINT)
            if child["kind"] in ROUTE_KINDS and endpoint in blocked:
                routes_unsettled = True
                log.warning("run %s/%s: not writing %s %s without its auth object", ns, name, child["kind"],
                            child["metadata"]["name"])
                continue
            try:
                if child["kind"] == "Pod" and actual is not None:
                    # A Pod's spec is immutable: replace it. The next reconcile creates the new one.
                    await self.kube.adelete("v1", "Pod", ns, child["metadata"]["name"])
                    self.written.forget(child)
                    if self.events is not None:
                        self.events.post(run, "Normal", "PodReplaced",
                                         f"the run's spec or template changed: Pod {child['metadata']['name']} is "
                                         "replaced (what it kept outside its volumes is gone)")
                    continue
                result = await self.kube.aapply(child)
                self.written.remember(result)
            except ApiError as e:
                failed = f"writing {child['kind']} {child['metadata']['name']}: {e.status_message}"
                if child["kind"] == "Pod":
                    pod_refused = e.status_message
                log.warning("run %s/%s: %s", ns, name, failed)
                if child["kind"] in AUTH_KINDS:
                    blocked.add(endpoint)
                elif child["kind"] in ROUTE_KINDS:
                    routes_unsettled = True
        # Routes go before auth objects: an endpoint's auth object must not go while its route is served.
        for key, actual in sorted(children.items(), key=lambda kv: kv[0][0] not in ROUTE_KINDS):
            if key not in wanted and key[0] in CHILD_KINDS:
                if key[0] in AUTH_KINDS and routes_unsettled:
                    continue  # the retry deletes it, once the routes are as desired
                if self.written.already_deleted(actual):
                    continue
                try:
                    await self.kube.adelete(actual["apiVersion"], key[0], ns, key[1])
                    self.written.deleting(actual)
                except ApiError as e:
                    failed = f"deleting {key[0]} {key[1]}: {e}"
                    if key[0] in ROUTE_KINDS:
                        routes_unsettled = True

        if conditions is None:
            if failed:
                conditions = set_condition(status.get("conditions"), "Ready", False, "ApplyFailed", failed, generation, now)
            else:
                conditions = set_condition(status.get("conditions"), "Ready", True, "Reconciled",
                                           "children are in line with the run and its active shares", generation, now)
        pod_name = model.service_name(name)
        # Our own apply's answer may be newer than the cache (its phase included).
        pod = self.written.newest(children.get(("Pod", pod_name)), ("Pod", ns, pod_name, "")) if not problems else None
        # Ready is the operator's work (children in line); ToolReady the tool's own state, from its Pod.
        previous = next((c for c in status.get("conditions") or [] if c.get("type") == render.TOOL_READY), None)
        tool = render.tool_condition(pod, pod_name, "the run's spec is invalid" if problems else "", previous,
                                     refused=pod_refused)
        conditions = set_condition(conditions, render.TOOL_READY, tool.ready, tool.reason, tool.message, generation, now)
        new_status = {
            **(render.run_status(run, shares, self.settings, now, runs_by_name, self.policy) if not problems else
               {"urls": [], "sharedWith": {"users": [], "groups": [], "summary": ""}}),
            "conditions": conditions,
            "podPhase": ((pod or {}).get("status") or {}).get("phase") or ("Pending" if pod else "Unknown"),
            "observedGeneration": generation,
        }
        if not contains(status, new_status):
            try:
                self.written.remember(await self.kube.amerge_patch_status(
                    model.API_VERSION, "ToolRun", ns, name, new_status))
            except ApiError as e:
                if e.status != 404:  # 404: the run is gone, nothing to retry
                    failed = f"writing status: {e}"
                    log.warning("run %s/%s: status write failed: %s", ns, name, e)
        if failed:
            raise RetryLater(failed)
        return new_status

    async def reconcile_share(self, share: Mapping, runs_by_name: Mapping[str, Mapping], now: dt.datetime) -> access.ShareState:
        share = self.written.newest(share, Written.key(share))
        ns, name = share["metadata"]["namespace"], share["metadata"]["name"]
        state = access.share_state(share, runs_by_name, now, self.policy)
        status = dict(share.get("status") or {})
        active = state.reason == access.ACTIVE
        # No observedGeneration here: a spec change that leaves the verdict alone (say, one more
        # user) then costs no status write; the run's Ingress and status carry the change.
        new_status = {
            **render.share_status(state),
            "conditions": set_condition(status.get("conditions"), "Ready", active, state.reason, state.message,
                                        None, now),
        }
        if not contains(status, new_status):
            try:
                self.written.remember(await self.kube.amerge_patch_status(
                    model.API_VERSION, "RunShare", ns, name, new_status))
            except ApiError as e:
                if e.status != 404:
                    log.warning("share %s/%s: status write failed: %s", ns, name, e)
                    raise RetryLater(f"writing status: {e}", result=state) from e
        return state


class RetryLater(Exception):
    """A write failed for a reason that may pass (API server away, 5xx): reconcile again later.
    `result` is what the reconcile decided anyway (a share's verdict), for the caller to act on."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result
