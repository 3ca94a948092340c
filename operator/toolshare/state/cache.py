"""The operator's memory of the cluster: kopf-index-like views, without kopf's indexing toggles.

kopf indexes were the first design, and they cost O(N^2) at start-up: during the initial listing
kopf makes a readiness toggle per indexed object and wakes every waiting object worker on each
toggle (measured: 67 s of CPU before the first reconcile at 1,000 runs; quadratic beyond). This
cache keeps the same shape (views filled by index functions, `view.get(key)` returns the values)
but is filled by a paginated LIST at start-up, before any handler runs, and then kept current
from the same watch events the handlers receive.

Memory (issue 7: 10,000 runs, 50,000 objects, in 250 MB): an object parsed from JSON costs
5-14 KB of Python dicts and strings, so the cache keeps a *projection* of each object (`project`:
the fields the renderer, the admission checks and the reconciler's comparisons read, nothing the
API server fills in for itself), packed once per object version (about 0.1-0.2 KB) and shared by
every view; a view decodes it on each read, so a reader always gets its own fresh dicts.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import ctypes.util
import gc
import logging
import queue
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import orjson
import zstandard

from toolshare.render.podstatus import project_pod_status

log = logging.getLogger("toolshare.cache")

IndexFn = Callable[..., Mapping | None]

# The children the operator renders (render.py), and the fields the API server fills in on them that
# the renderer never sets: a comparison (conditions.contains(actual, desired)) only reads the
# desired object's fields, so the cache need not keep these (tests/unit/test_cache.py checks
# that no rendered child sets one). The Gateway API routes and their auth objects are children
# too: their status (an HTTPRoute's status.parents, rewritten by the Gateway controller) is read by
# no decision. Their CRDs' defaults land below the top-level spec keys the renderer sets
# (backendRefs[].weight, extAuth.failOpen), where contains() ignores extra keys: nothing to drop.
CHILD_KINDS = frozenset({"Pod", "Service", "Ingress", "NetworkPolicy", "HTTPRoute", "Middleware", "SecurityPolicy"})
SERVER_FILLED_SPEC = {
    "Service": frozenset({"clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy",
                          "sessionAffinity", "sessionAffinityConfig", "externalTrafficPolicy",
                          "healthCheckNodePort", "allocateLoadBalancerNodePorts", "trafficDistribution"}),
}
# Metadata a child comparison or a delete reads (the desired child sets name, namespace, labels,
# annotations and ownerReferences); ToolRuns, RunShares and ImageShares also need their generation
# (observedGeneration), creationTimestamp (the oldest run holds a host; the oldest ImageShare
# holds a claim) and deletionTimestamp.
CHILD_METADATA = ("name", "namespace", "uid", "resourceVersion", "labels", "annotations", "ownerReferences")
OBJECT_METADATA = CHILD_METADATA + ("generation", "creationTimestamp", "deletionTimestamp")
# Big, and read by no one here (kubectl's client-side apply copy of the whole object).
DROPPED_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})


def project(obj: Mapping) -> dict:
    """What the operator keeps of an object: a new dict (sharing only immutable leaves with `obj`).

    Children keep their identity, labels, annotations, ownerReferences and spec (minus the fields
    the API server fills in), a Pod only its metadata (with deletionTimestamp) and what the run's
    ToolReady condition and podPhase read of its status (render/podstatus.py; its spec is compared
    by render hash alone). ToolRuns, RunShares and ImageShares keep spec and status whole.
    """
    return _projection(obj, copy.deepcopy)


def _same(value):
    return value


def project_owned(obj: Mapping) -> dict:
    """project() of an object handed over by a caller that keeps no reference to it (a write's
    fresh answer): its values are taken, not copied (the copy was 3% of the operator's busy time
    per share change: BENCHMARKS.md)."""
    return _projection(obj, _same)


def _projection(obj: Mapping, copied: Callable) -> dict:
    """project(), with `copied` applied to every mutable value taken from `obj`: pack() serializes the
    projection at once, so it needs no copies (a deep copy was most of its cost)."""
    kind = obj.get("kind")
    child = kind in CHILD_KINDS
    meta = obj.get("metadata") or {}
    out_meta = {}
    for key in (CHILD_METADATA if child else OBJECT_METADATA):
        value = meta.get(key)
        if value is None:
            continue
        if key == "annotations" and not DROPPED_ANNOTATIONS.isdisjoint(value):
            value = {k: v for k, v in value.items() if k not in DROPPED_ANNOTATIONS}
        out_meta[key] = copied(value)
    out: dict = {"apiVersion": obj.get("apiVersion"), "kind": kind, "metadata": out_meta}
    if kind == "Pod":
        if meta.get("deletionTimestamp"):
            out_meta["deletionTimestamp"] = meta["deletionTimestamp"]
        out["status"] = project_pod_status(obj.get("status"))
        return out
    spec = obj.get("spec")
    if spec is not None:
        dropped = SERVER_FILLED_SPEC.get(kind, ())
        out["spec"] = copied({k: v for k, v in spec.items() if k not in dropped}
                             if isinstance(spec, Mapping) else spec)
    if not child and obj.get("status") is not None:
        out["status"] = copied(obj["status"])
    return out


# Packed projections are JSON (orjson: 6.6 µs to parse one against a pickle's 11.4, and every
# view.get parses), compressed by zstd against a raw dictionary of what Toolshare's objects have
# in common (the keys and the usual values): the samples below go from 500-1,200 bytes to 140-260.
# zstd packs an object in 5 µs where deflate with the same dictionary took 20 (a start-up packs
# 60,000 at 10,000 runs) and unpacks it in 2 µs against 3. The samples only tune the compression;
# any object packs and unpacks the same.
_UID = "00000000-0000-0000-0000-000000000000"
_META = {"name": "r", "namespace": "ns", "uid": _UID, "resourceVersion": "1", "generation": 1,
         "creationTimestamp": "2026-01-01T00:00:00Z",
         "labels": {"app.kubernetes.io/managed-by": "toolshare", "toolshare.dev/run": "r",
                    "toolshare.dev/endpoint": "lab"},
         "annotations": {"toolshare.dev/render-hash": "0000000000000000", "toolshare.dev/owner": "alice",
                         "toolshare.dev/allowed-users": "bob", "toolshare.dev/allowed-groups": "lab",
                         "toolshare.dev/shared-by": "admin", "toolshare.dev/shared-by-groups": "system:masters",
                         "nginx.ingress.kubernetes.io/auth-url":
                             "http://toolshare-gate.toolshare-system.svc.cluster.local:8080/check/ns/r/lab",
                         "nginx.ingress.kubernetes.io/auth-signin":
                             "https://auth.toolshare.localhost/oauth2/start?rd=$scheme://$host$escaped_request_uri",
                         "nginx.ingress.kubernetes.io/auth-response-headers":
                             "X-Auth-Request-User,X-Auth-Request-Email,X-Auth-Request-Groups"},
         "ownerReferences": [{"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun", "name": "r",
                              "uid": _UID, "controller": True, "blockOwnerDeletion": True}]}
_CONDITION = {"type": "Ready", "status": "True", "reason": "Reconciled", "lastTransitionTime": "2026-01-01T00:00:00Z",
              "message": "children are in line with the run and its active shares", "observedGeneration": 1}
_SAMPLES = [
    {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun", "metadata": _META,
     "spec": {"owner": "alice", "image": "jupyter/base-notebook", "friendlyName": "notebook",
              "endpoints": [{"name": "lab", "port": 8888, "protocol": "http", "path": "/"},
                            {"name": "ssh", "port": 22, "protocol": "ssh"}]},
     "status": {"urls": ["http://r.toolshare.localhost/lab"], "podPhase": "Pending", "observedGeneration": 1,
                "sharedWith": {"users": ["bob"], "groups": ["lab"], "summary": "bob, group:lab"},
                "conditions": [_CONDITION, dict(_CONDITION, type="ToolReady", reason="Running",
                                                message="container tool (image jupyter/base-notebook) is running and ready")]}},
    {"apiVersion": "toolshare.dev/v1alpha1", "kind": "RunShare", "metadata": _META,
     "spec": {"runRef": {"name": "r"}, "users": ["bob"], "groups": ["lab"], "expiresAt": "2026-01-01T00:00:00Z"},
     "status": {"runs": ["r"], "conditions": [dict(_CONDITION, reason="Active", message="shares ToolRun r")]}},
    {"apiVersion": "v1", "kind": "Pod", "metadata": _META, "status": {
        "phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
        "containerStatuses": [{"ready": True, "restartCount": 0, "name": "tool", "image": "jupyter/base-notebook",
                               "state": {"running": {}}}]}},
    {"apiVersion": "v1", "kind": "Service", "metadata": _META,
     "spec": {"type": "ClusterIP", "selector": {"app.kubernetes.io/managed-by": "toolshare", "toolshare.dev/run": "r"},
              "ports": [{"name": "lab", "port": 8888, "targetPort": "lab", "protocol": "TCP", "appProtocol": "http"}]}},
    {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": _META,
     "spec": {"ingressClassName": "nginx", "rules": [{"host": "r.toolshare.localhost", "http": {"paths": [{
         "path": "/", "pathType": "Prefix", "backend": {"service": {"name": "r", "port": {"name": "lab"}}}}]}}]}},
    {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _META,
     "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "toolshare", "toolshare.dev/run": "r"}},
              "policyTypes": ["Ingress"], "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
                  "kubernetes.io/metadata.name": "ingress-nginx"}}}], "ports": [{"port": 8888, "protocol": "TCP"}]}]}},
    # Gateway mode (render/httproute.py): a route and a Traefik forwardAuth Middleware.
    {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": _META,
     "spec": {"parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "gateways",
                              "name": "public"}],
              "hostnames": ["r.toolshare.localhost"],
              "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                         "filters": [{"type": "ExtensionRef", "extensionRef": {
                             "group": "traefik.io", "kind": "Middleware", "name": "r-lab-0000000000"}}],
                         "backendRefs": [{"group": "", "kind": "Service", "name": "r", "port": 8888, "weight": 1}]}]}},
    {"apiVersion": "traefik.io/v1alpha1", "kind": "Middleware", "metadata": _META,
     "spec": {"forwardAuth": {"address": "http://toolshare-gate.toolshare-system.svc.cluster.local:8080/check/ns/r/lab",
                              "authResponseHeaders": ["X-Auth-Request-User", "X-Auth-Request-Email",
                                                      "X-Auth-Request-Groups"]}}},
]
_ZDICT = zstandard.ZstdCompressionDict(b"".join(orjson.dumps(sample) for sample in _SAMPLES),
                                      dict_type=zstandard.DICT_TYPE_RAWCONTENT)
_LEVEL = 3
_ZDICT.precompute_compress(level=_LEVEL)
# zstandard's compressors and decompressors may not be used by two threads at once (the start-up
# LIST packs in a thread of its own): one of each per thread.
_CODECS = threading.local()


def _codecs(local=_CODECS):
    try:
        return local.codecs
    except AttributeError:
        local.codecs = (zstandard.ZstdCompressor(level=_LEVEL, dict_data=_ZDICT, write_checksum=False,
                                                 write_content_size=True, write_dict_id=False),
                        zstandard.ZstdDecompressor(dict_data=_ZDICT))
        return local.codecs


def pack(obj: Mapping) -> bytes:
    """An object's projection as the cache stores it (about 2% of its parsed size)."""
    # zstandard answers a bytes object sized for the worst case, then shrunk in place: kept as it
    # is, each left a hole of a kilobyte behind it (60,000 packed objects held 40 MB more, measured).
    # A copy of the right size lets the next compression reuse the big one.
    return bytes(memoryview(_codecs()[0].compress(orjson.dumps(_projection(obj, _same)))))


def unpack(value):
    """A stored value as readers see it: packed projections decode to fresh dicts."""
    if isinstance(value, bytes):
        return orjson.loads(_codecs()[1].decompress(value))
    return value


def _version(body: Mapping) -> int:
    try:
        return int(body["metadata"].get("resourceVersion") or 0)
    except ValueError:  # resourceVersions are opaque; ours are etcd revisions
        return 0


class View:
    """key -> the values contributed by every object under that key (like a kopf index)."""

    def __init__(self) -> None:
        self.data: dict = {}

    def get(self, key, default=()) -> list:
        found = self.data.get(key)
        return [unpack(v) for v in found.values()] if found else list(default)

    def keys(self):
        return self.data.keys()

    def values(self) -> Iterator[list]:
        for found in self.data.values():
            yield [unpack(v) for v in found.values()]

    def __len__(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class Source:
    """One watched resource kind: its list path and, for children, a label selector."""

    path: str
    label_selector: str = ""


class _Entry:
    """What the cache knows of one object: its version, its packed projection, its view keys."""

    __slots__ = ("kind", "version", "packed", "links")

    def __init__(self, kind: str, version: int) -> None:
        self.kind = kind
        self.version = version
        self.packed: bytes | None = None  # of this version; None until an index function asks
        self.links: tuple = ()  # view name, key, view name, key, ... (flat: no tuple per pair)


@dataclass
class Cache:
    views: dict[str, View] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    _fns: dict[str, list[tuple[str, IndexFn]]] = field(default_factory=lambda: defaultdict(list))
    _entries: dict[str, _Entry] = field(default_factory=dict)  # uid -> entry

    def view(self, name: str) -> View:
        return self.views.setdefault(name, View())

    def index(self, kind: str, source: Source) -> Callable[[IndexFn], IndexFn]:
        """Decorator: `fn(namespace=, name=, body=, spec=, labels=)` -> {key: value} or None."""
        self.sources[kind] = source

        def register(fn: IndexFn) -> IndexFn:
            self._fns[kind].append((fn.__name__, fn))
            self.view(fn.__name__)
            return fn

        return register

    def packed(self, body: Mapping) -> bytes:
        """The one packed projection of this object version, shared by every view holding it."""
        entry = self._entries.get(body["metadata"]["uid"])
        if entry is None or entry.version != _version(body):
            return pack(body)
        if entry.packed is None:
            entry.packed = pack(body)
        return entry.packed

    stripped = packed  # its name before projections (tests/unit/test_relist.py uses it)

    def version(self, uid: str) -> int:
        """The resourceVersion the cache holds for an object (0: none)."""
        entry = self._entries.get(uid)
        return entry.version if entry is not None else 0

    def put(self, kind: str, body: Mapping) -> bool:
        """Record an object's current version; False (and nothing changed) if it is older."""
        meta = body["metadata"]
        uid = sys.intern(meta["uid"])  # one string per uid, however many views hold the object
        version = _version(body)
        entry = self._entries.get(uid)
        if entry is not None and version and version < entry.version:
            return False
        if entry is not None and version and version == entry.version:
            # The same version again (kopf's listing after prefill's, a relist): nothing to
            # re-project. At 10,000 runs a restart replays 60,000 objects this way.
            return True
        if entry is None:
            entry = self._entries[uid] = _Entry(kind, version)
        elif entry.version != version or not version:
            entry.version, entry.packed = version, None
        self._unlink(entry, uid)
        namespace, name = meta.get("namespace"), meta["name"]
        namespace = sys.intern(namespace) if namespace else namespace
        try:  # every view's contribution first, so an index function that fails changes no view
            contributions = [(view_name, fn(namespace=namespace, name=sys.intern(name), body=body,
                                            spec=body.get("spec") or {}, labels=meta.get("labels") or {}) or {})
                             for view_name, fn in self._fns[kind]]
        except Exception:
            del self._entries[uid]  # the object is no longer held at all: it grants nothing
            raise
        links: list = []
        for view_name, contributed in contributions:
            view = self.views[view_name]
            for key, value in contributed.items():
                view.data.setdefault(key, {})[uid] = value
                links += (view_name, key)
        entry.links = tuple(links)
        return True

    def drop(self, kind: str, body: Mapping) -> None:
        uid = body["metadata"]["uid"]
        entry = self._entries.pop(uid, None)
        if entry is not None:
            self._unlink(entry, uid)

    def _unlink(self, entry: _Entry, uid: str) -> None:
        links = entry.links
        for i in range(0, len(links), 2):
            data = self.views[links[i]].data
            found = data.get(links[i + 1])
            if found is not None:
                found.pop(uid, None)
                if not found:
                    del data[links[i + 1]]
        entry.links = ()

    def fill(self, kind: str, items) -> int:
        count = 0
        for item in items:
            self.put(kind, item)
            count += 1
        return count

    def replacing(self, kind: str) -> "Replacement":
        """Hold exactly the objects of `kind` a LIST lists, stored page by page as it comes
        (Replacement.page, then .finish once the last page is in)."""
        return Replacement(self, kind)


class Replacement:
    """Hold exactly the listed objects of one kind once every page is in. finish() returns the
    (view, key) pairs of every object that changed, came or went (old and new keys), so that only
    what they belong to is looked at again."""

    def __init__(self, cache: Cache, kind: str):
        self.cache, self.kind = cache, kind
        self.listed: set[str] = set()
        self.touched: set[tuple[str, object]] = set()

    @staticmethod
    def _keys(entry: _Entry) -> set[tuple[str, object]]:
        return set(zip(entry.links[::2], entry.links[1::2]))

    def page(self, items) -> None:
        entries = self.cache._entries
        for item in items:
            uid = item["metadata"]["uid"]
            before = entries.get(uid)
            old = (before.version, self._keys(before)) if before is not None else (None, set())
            try:
                self.cache.put(self.kind, item)
            except Exception:  # noqa: BLE001 - leave it out: what is not held grants nothing
                log.exception("leaving a malformed %s out of the cache", self.kind)
                self.touched |= old[1]
                continue
            self.listed.add(uid)
            entry = entries[uid]
            if old[0] != entry.version:
                self.touched |= old[1] | self._keys(entry)

    def finish(self) -> set[tuple[str, object]]:
        entries = self.cache._entries
        for uid, entry in list(entries.items()):
            if entry.kind == self.kind and uid not in self.listed:
                self.touched |= self._keys(entry)
                del entries[uid]
                self.cache._unlink(entry, uid)
        return self.touched


def list_query(source: Source, page: int, token: str = "") -> list[tuple[str, str]]:
    """The query of one page of a paginated LIST of `source`."""
    query = [("limit", str(page))]
    if source.label_selector:
        query.append(("labelSelector", source.label_selector))
    if token:
        query.append(("continue", token))
    return query


def list_pages(kube, source: Source, api_version: str, kind: str, page: int = 500,
               listed: dict | None = None) -> Iterator[list[dict]]:
    """A paginated LIST, one page at a time (blocking; run it in a thread), so that no more than a
    page of whole objects is alive at once. Items get apiVersion and kind back. `listed` gets the
    "resourceVersion" the LIST was served at (every page of it shares the first one's): a watch
    from there misses nothing."""
    token = ""
    while True:
        page_body = kube.request("GET", source.path, query=list_query(source, page, token))
        if listed is not None and not token:
            listed["resourceVersion"] = (page_body.get("metadata") or {}).get("resourceVersion") or ""
        items = page_body.pop("items", None) or []
        for item in items:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        token = (page_body.get("metadata") or {}).get("continue") or ""
        del page_body
        yield items
        if not token:
            return


def interleaved(streams: Mapping, width: int = 3, depth: int = 2) -> Iterator[tuple]:
    """(key, page) from several paginated LISTs (`streams`: key -> iterator of pages), fetched by
    `width` threads at once while the caller stores what has arrived: the API server serves the
    LISTs side by side, on both cores, instead of one after the other. Each stream's pages come in
    its order, at most `depth` wait at once, and a failed fetch is raised here. When the caller
    stops early (a failure), the fetching threads stop at their next page."""
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    todo = list(streams.items())[::-1]
    stop = threading.Event()
    done = object()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        while not stop.is_set():
            try:
                key, pages = todo.pop()  # atomic: each stream is fetched by one thread
            except IndexError:
                return
            try:
                for items in pages:
                    if not offer((key, items)):
                        return
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                offer((key, e))
                return
            offer((key, done))

    left = len(todo)
    for _ in range(min(width, left)):
        threading.Thread(target=fetch, name="list-pages", daemon=True).start()
    try:
        while left:
            key, items = handoff.get()
            if items is done:
                left -= 1
            elif isinstance(items, BaseException):
                raise items
            else:
                yield key, items
    finally:
        stop.set()


def list_all(kube, source: Source, api_version: str, kind: str, page: int = 500) -> list[dict]:
    """Every object of a LIST at once (prefer list_pages for big lists)."""
    return [item for items in list_pages(kube, source, api_version, kind, page) for item in items]


_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            _LIBC = ctypes.CDLL(name) if name else False
            _LIBC.malloc_trim  # glibc only
        except (OSError, AttributeError):
            _LIBC = False
    return _LIBC


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread its own malloc arena (up to 8 per core) and keeps freed memory in
    each; the operator's write threads would otherwise pin a fragmented arena apiece. Call early."""
    libc = _libc()
    if libc:
        libc.mallopt(-8, arenas)  # M_ARENA_MAX


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off during a burst that makes no cycles (the start-up LIST:
    parsed JSON, freed by reference counting, and packed bytes), then everything still alive
    frozen out of later collections. Left on, each page of parsed objects outlived a few young
    collections and so triggered full ones, each walking the growing cache again: at 10,000 runs
    a quarter of a restart's CPU (BENCHMARKS.md). Frozen objects are still freed when their
    references go; only a cycle among them would never be collected, and the cache makes none."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.collect()  # what start-up left in cycles, so that it is not frozen
        gc.freeze()
        if enabled:
            gc.enable()


def release_memory() -> None:
    """Give the memory freed after a burst (the start-up LIST) back to the system (glibc only)."""
    libc = _libc()
    if libc:
        libc.malloc_trim(0)


CACHE = Cache()
