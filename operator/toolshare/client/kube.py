"""A thin raw-JSON Kubernetes client for the operator.

It rides on the official client's configuration for authentication (kubeconfig, in-cluster tokens,
exec plugins) but sends and receives plain dicts: no model conversion, and server-side apply for
children. Every write is counted, so tests and benchmarks can hold the operator to its write budget.

Two faces: blocking `request` (start-up LISTs, the webhooks' directory read, run in threads) and
`arequest` on aiohttp in the event loop, used by every reconcile write. The reconciler's writes
used to go through a pool of 16 threads; their GIL hand-offs with the event loop (a convoy: the
loop waits up to the 5 ms switch interval for the GIL after every select) held admission answers
and watch events back — at 50 changes/s the webhook took 203 ms on average, 22 ms once the
hand-offs were made cheap (BENCHMARKS.md). In the loop there is nothing to hand off.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import kubernetes
import orjson
import prometheus_client

from toolshare.client.config import ApiConfig

WRITES = prometheus_client.Counter("toolshare_api_writes_total", "Write requests sent to the API server.", ["verb", "kind"])
WRITE_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)

# Path segments of the kinds the operator writes: (group/version path prefix, plural, namespaced).
KINDS = {
    ("v1", "Pod"): ("/api/v1", "pods"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "Event"): ("/api/v1", "events"),
    ("networking.k8s.io/v1", "Ingress"): ("/apis/networking.k8s.io/v1", "ingresses"),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("/apis/networking.k8s.io/v1", "networkpolicies"),
    # TOOLSHARE_ROUTING=gateway (render/httproute.py): the routes and their auth objects.
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    ("traefik.io/v1alpha1", "Middleware"): ("/apis/traefik.io/v1alpha1", "middlewares"),
    ("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy"): ("/apis/gateway.envoyproxy.io/v1alpha1", "securitypolicies"),
    ("toolshare.dev/v1alpha1", "ToolRun"): ("/apis/toolshare.dev/v1alpha1", "toolruns"),
    ("toolshare.dev/v1alpha1", "RunShare"): ("/apis/toolshare.dev/v1alpha1", "runshares"),
    ("toolshare.dev/v1alpha1", "ImageShare"): ("/apis/toolshare.dev/v1alpha1", "imageshares"),
}


class ApiError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"{status}: {body[:500]}")
        self.status = status
        self.body = body

    @property
    def status_message(self) -> str:
        """Why, in one line: the message of the API server's Status answer (`... is forbidden:
        User "bob" cannot list ...`, `admission webhook ... denied the request: ...`), else the
        HTTP status and the start of the body."""
        try:
            message = orjson.loads(self.body).get("message")
        except (ValueError, AttributeError):
            message = None
        text = message or (f"HTTP {self.status}: {self.body[:300]}" if self.status else self.body[:300])
        return " ".join(str(text).split())


def object_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    prefix, plural = KINDS[(api_version, kind)]
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


@dataclass
class Kube:
    api: kubernetes.client.ApiClient
    field_manager: str = "toolshare"
    writes: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)
    _session_loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    _api: ApiConfig | None = field(default=None, repr=False)

    @classmethod
    def from_environment(cls, field_manager: str = "toolshare") -> "Kube":
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        return cls(kubernetes.client.ApiClient(), field_manager)

    def _count(self, method: str, kind: str) -> None:
        if method != "GET":
            with self._lock:
                self.writes[method] += 1
            WRITES.labels(method, kind).inc()

    def request(self, method: str, path: str, body=None, query: list | None = None,
                content_type: str = "application/json", kind: str = "") -> dict:
        self._count(method, kind)
        method_, url, headers, body_, _ = self.api.param_serialize(
            method, path, query_params=query or [], body=body,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(method_, url, header_params=headers, body=body_, _request_timeout=30)
        data = resp.read()
        if not 200 <= resp.status < 300:
            raise ApiError(resp.status, data.decode(errors="replace") if data else "")
        return orjson.loads(data) if data else {}

    def _aiohttp(self) -> aiohttp.ClientSession:
        """One keep-alive session per event loop (tests run several loops in one process)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session_loop is not loop or self._session.closed:
            self._api = self._api or ApiConfig.of(self.api.configuration)
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._api.ssl, limit=64))
            self._session_loop = loop
        return self._session

    async def arequest(self, method: str, path: str, body=None, query: list | None = None,
                       content_type: str = "application/json", kind: str = "") -> dict:
        """`request` in the event loop. A transport failure (API server away, restarting) is an
        ApiError with status 0: as transient as a 5xx, so it takes the same retry path."""
        self._count(method, kind)
        session = self._aiohttp()
        headers = {**self._api.headers(), "Content-Type": content_type}
        try:
            async with session.request(method, self._api.host + path, params=query or None, headers=headers,
                                       data=None if body is None else orjson.dumps(body),
                                       timeout=WRITE_TIMEOUT) as resp:
                status, data = resp.status, await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise ApiError(0, f"API server unreachable: {e!r}") from e
        if not 200 <= status < 300:
            raise ApiError(status, data.decode(errors="replace") if data else "")
        return orjson.loads(data) if data else {}

    # Each write is described once (method, path, body, query, content type, kind) and sent by
    # either face: `apply`/`aapply`, `merge_patch_status`/`amerge_patch_status`, `delete`/`adelete`.

    def _apply(self, obj: dict, force: bool = True) -> dict:
        """Server-side apply `obj` under our one field manager."""
        meta = obj["metadata"]
        return dict(method="PATCH", path=object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]),
                    body=obj, query=[("fieldManager", self.field_manager)] + ([("force", "true")] if force else []),
                    content_type="application/apply-patch+yaml", kind=obj["kind"])

    @staticmethod
    def _merge_patch_status(api_version: str, kind: str, namespace: str, name: str, status: dict) -> dict:
        return dict(method="PATCH", path=object_path(api_version, kind, namespace, name) + "/status",
                    body={"status": status}, content_type="application/merge-patch+json", kind=f"{kind}/status")

    @staticmethod
    def _delete(api_version: str, kind: str, namespace: str, name: str) -> dict:
        return dict(method="DELETE", path=object_path(api_version, kind, namespace, name),
                    body={"propagationPolicy": "Background"}, kind=kind)

    def apply(self, obj: dict, force: bool = True) -> dict:
        return self.request(**self._apply(obj, force))

    async def aapply(self, obj: dict, force: bool = True) -> dict:
        return await self.arequest(**self._apply(obj, force))

    def merge_patch_status(self, *args) -> dict:
        return self.request(**self._merge_patch_status(*args))

    async def amerge_patch_status(self, *args) -> dict:
        return await self.arequest(**self._merge_patch_status(*args))

    def delete(self, *args) -> None:
        try:
            self.request(**self._delete(*args))
        except ApiError as e:
            if e.status != 404:
                raise

    async def adelete(self, *args) -> None:
        try:
            await self.arequest(**self._delete(*args))
        except ApiError as e:
            if e.status != 404:
                raise

    def create(self, obj: dict) -> dict:
        meta = obj["metadata"]
        return self.request("POST", object_path(obj["apiVersion"], obj["kind"], meta["namespace"]), body=obj,
                            kind=obj["kind"])
