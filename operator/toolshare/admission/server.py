"""The admission webhooks' HTTPS transport on plain aiohttp: an AdmissionReview in, the verdict (and
a JSON patch) out. The decisions are webhooks.py's, through the pure modules.

kopf served these until issue 17. Its admission machinery made, per call, a memo, a diff of the old
and new objects, a Patch object and a logger per object, and ran the handler through its
execution engine: about 1 ms of the operator's CPU per call, a fifth of its busy time per share
change at 10,000 runs (BENCHMARKS.md). Here a call is one JSON parse, one function and one answer.

The server keeps kopf's contract with the configurations (webhookconfig.py): one path per hook
id, HTTPS with the serving certificate from the cert dir, and the certificate files re-read when
they change (a renewal by cert-manager or Helm) without dropping the listener.

Beyond kopf: the callers can be authenticated (docs/security.md, "the webhook port"). Anyone who
reaches the port could otherwise send a crafted AdmissionReview naming any user and read the
answers: an oracle for who may read which Secret (the run references are checked by a
SubjectAccessReview as the named user) and for which runs and shares exist in other namespaces.
With a client CA the TLS handshake requires a certificate from it, and a request is answered only
for a certificate naming one of the allowed webhook clients (the API server's, configured through
its AdmissionConfiguration); a certificate from the same CA for anyone else gets 403.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiohttp import web
from prometheus_client import Counter, Gauge

log = logging.getLogger("toolshare.admission")
# An AdmissionReview carries the object and the old one; a stored object is at most 1.5 MiB.
MAX_REVIEW_BYTES = 8 << 20
CERT_CHECK_SECONDS = 60.0
# The name the API server's webhook client certificate carries unless told otherwise: the local
# control plane's (toolshare.local.controlplane.cluster), the chart's and docs/admission.md's.
DEFAULT_CLIENT_NAME = "kube-apiserver-webhook-client"
CLIENT_AUTH = Gauge("toolshare_webhook_client_auth", "1 when the admission webhooks answer only an allowed "
                    "client certificate (--webhook-client-ca), 0 when anyone reaching the port is answered.")
CALLERS_REFUSED = Counter("toolshare_webhook_callers_refused_total", "Webhook requests refused for their "
                          "client certificate (from the client CA, naming no allowed client).")
HANDSHAKES = Counter("toolshare_webhook_tls_handshakes_total", "TLS handshakes begun on the webhook port: a "
                     "count that grows with the calls means the API server opens a connection per call.")


class Refused(Exception):
    """The request is refused: `message` goes to whoever wrote it, `code` is the HTTP status the API
    server reports (403 refused; 503 cannot be decided now)."""

    def __init__(self, message: str, code: int = 403):
        super().__init__(message)
        self.message, self.code = message, code


@dataclass(frozen=True)
class Review:
    """What a decision reads of an AdmissionReview request."""

    operation: str
    object: Mapping | None
    old_object: Mapping | None
    userinfo: Mapping
    namespace: str
    resource: str = ""  # the plural, as the API server names it (request.resource.resource)
    dry_run: bool = False

    @property
    def body(self) -> Mapping:
        """The object the request is about: the new one, or the old one for a DELETE."""
        return self.object if self.object is not None else (self.old_object or {})

    @classmethod
    def of(cls, request: Mapping) -> Review:
        if not isinstance(request.get("userInfo"), Mapping):
            raise ValueError("request.userInfo is missing")
        obj, old = request.get("object"), request.get("oldObject")
        if obj is None and old is None:
            raise ValueError("request.object and request.oldObject are both missing")
        resource = request.get("resource") if isinstance(request.get("resource"), Mapping) else {}
        return cls(operation=str(request.get("operation") or ""), object=obj, old_object=old,
                   userinfo=request["userInfo"], namespace=str(request.get("namespace") or ""),
                   resource=str(resource.get("resource") or ""), dry_run=bool(request.get("dryRun")))


# A hook decides one Review of its resource (a plural): it returns JSON patch operations (mutating
# hooks; [] for none) or raises Refused.
Hook = Callable[[Review], Awaitable[list[dict]]]
Hooks = Mapping[str, tuple[str, Hook]]  # hook id -> (plural, hook)


def pointer(*segments: str) -> str:
    """A JSON pointer (RFC 6901) to the given path segments: '~' and '/' escaped."""
    return "".join("/" + s.replace("~", "~0").replace("/", "~1") for s in segments)


def answer(review: Mapping, allowed: bool, patch: list[dict] | None = None, message: str = "",
           code: int = 0) -> dict:
    """The AdmissionReview response to `review` (the version it came in)."""
    response: dict = {"uid": (review.get("request") or {}).get("uid", ""), "allowed": allowed}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(patch)).decode("ascii")
    if not allowed:
        response["status"] = {"code": code or 403, "message": message}
    return {"apiVersion": review.get("apiVersion") or "admission.k8s.io/v1",
            "kind": review.get("kind") or "AdmissionReview", "response": response}


async def decide(hooks: Hooks, hook_id: str, review: Mapping) -> dict:
    """The answer to one AdmissionReview for `hook_id`. A review of another resource than the
    hook's is malformed (ValueError: a misrouted configuration must not be judged by the wrong
    rules); a hook that fails refuses (500): a webhook with failurePolicy Fail must not admit what
    it could not decide."""
    request = review.get("request")
    if not isinstance(request, Mapping):
        raise ValueError("the AdmissionReview has no request")
    parsed = Review.of(request)
    plural, hook = hooks[hook_id]
    if parsed.resource != plural:
        raise ValueError(f"hook {hook_id} reviews {plural}, not {parsed.resource or 'an unnamed resource'}")
    try:
        patch = await hook(parsed)
    except Refused as e:
        return answer(review, False, message=e.message, code=e.code)
    except Exception as e:  # noqa: BLE001 - fail closed, say why in the log
        log.exception("admission hook %s failed", hook_id)
        return answer(review, False, message=f"admission check {hook_id} failed: {type(e).__name__}", code=500)
    return answer(review, True, patch=patch)


def peer_names(peercert: Mapping | None) -> set[str]:
    """The names a verified client certificate (ssl.SSLSocket.getpeercert()) carries: its subject's
    common names and its DNS subject alternative names."""
    if not peercert:
        return set()
    names = {value for rdn in peercert.get("subject") or () for key, value in rdn if key == "commonName"}
    return names | {value for kind, value in peercert.get("subjectAltName") or () if kind == "DNS"}


def client_problem(peercert: Mapping | None, allowed: frozenset[str]) -> str | None:
    """Why a caller may not be answered, or None. `allowed` empty: callers are not authenticated
    (no client CA configured); otherwise the verified certificate must name an allowed client."""
    if not allowed:
        return None
    names = peer_names(peercert)
    if not names:
        return "a client certificate is required"
    if names.isdisjoint(allowed):
        return f"client certificate {', '.join(sorted(names))[:200]} is not an allowed webhook client"
    return None


def application(hooks: Hooks, client_names: frozenset[str] = frozenset()) -> web.Application:
    """POST /<hook id>: an AdmissionReview for that hook, from an allowed client."""

    async def serve(request: web.Request) -> web.Response:
        transport = request.transport
        problem = client_problem(transport.get_extra_info("peercert") if transport else None, client_names)
        if problem is not None:  # before reading the body: a stranger's review is not even parsed
            CALLERS_REFUSED.inc()
            log.warning("admission webhooks: refused a caller from %s: %s", request.remote, problem)
            raise web.HTTPForbidden(reason=problem)
        hook_id = request.match_info["hook"]
        if hook_id not in hooks:
            raise web.HTTPNotFound(reason=f"no admission hook {hook_id!r}")
        try:
            review = orjson.loads(await request.read())
            if not isinstance(review, Mapping):
                raise ValueError("not an object")
            return web.Response(body=orjson.dumps(await decide(hooks, hook_id, review)), content_type="application/json")
        except ValueError as e:  # malformed JSON or review: the API server applies failurePolicy (Fail)
            raise web.HTTPBadRequest(reason=f"malformed AdmissionReview: {str(e)[:200]}") from e

    app = web.Application(client_max_size=MAX_REVIEW_BYTES)
    app.router.add_post("/{hook}", serve)
    return app


def _digest(paths: list[Path]) -> str:
    hasher = hashlib.sha256()
    for path in paths:
        hasher.update(path.read_bytes())
    return hasher.hexdigest()


@dataclass
class Server:
    """Serves `hooks` over HTTPS on addr:port with the certificate files given; `on_ca(ca_pem)`
    is called once listening and again whenever the CA changes (the configurations carry it).
    With `client_ca`, callers must present a certificate from it naming one of `client_names`."""

    hooks: Hooks
    addr: str
    port: int
    certfile: Path
    keyfile: Path
    cafile: Path | None = None
    on_ca: Callable[[bytes], Awaitable[None]] | None = None
    check_seconds: float = CERT_CHECK_SECONDS
    client_ca: Path | None = None
    client_names: frozenset[str] = frozenset()
    _runner: web.AppRunner | None = field(default=None, repr=False)
    _watch: asyncio.Task | None = field(default=None, repr=False)
    _context: ssl.SSLContext | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.client_ca is not None and not self.client_names:
            raise ValueError("a webhook client CA needs the client names it may vouch for: any certificate "
                             "from a cluster CA (a kubelet's, a user's) would otherwise be answered")

    def ca_pem(self) -> bytes:
        """The CA the API server is to trust: the given CA, else the serving certificate itself."""
        return (self.cafile or self.certfile).read_bytes()

    def _files(self) -> list[Path]:
        return [p for p in (self.certfile, self.keyfile, self.cafile, self.client_ca) if p is not None]

    def _new_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certfile, self.keyfile)
        if self.client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=self.client_ca)
        return context

    def _pick(self, sslobj: ssl.SSLObject, server_name: str | None, listening: ssl.SSLContext) -> None:
        """Each handshake takes the newest context (called with or without SNI): a context's trust
        store only grows in place, so a client CA that was replaced is dropped by swapping."""
        HANDSHAKES.inc()
        if self._context is not listening:
            sslobj.context = self._context

    async def start(self) -> None:
        context = self._context = self._new_context()
        context.sni_callback = self._pick
        self._runner = web.AppRunner(application(self.hooks, self.client_names if self.client_ca else frozenset()),
                                     handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.addr or None, self.port, ssl_context=context,
                          reuse_address=True).start()
        log.info("admission webhooks listening on https://%s:%d", self.addr or "*", self.port)
        CLIENT_AUTH.set(1 if self.client_ca is not None else 0)
        if self.client_ca is None:
            log.warning("admission webhooks: callers are not authenticated (no client CA): whoever reaches "
                        "port %d can ask for decisions (docs/security.md, the webhook port)", self.port)
        if self.on_ca is not None:
            await self.on_ca(self.ca_pem())
        self._watch = asyncio.create_task(self._follow(), name="admission-certs")

    async def _follow(self) -> None:
        """Re-read the certificate files when they change: new connections get a context made
        from them (the serving chain, the client CA), and a new CA goes to the configurations."""
        digest, ca = _digest(self._files()), self.ca_pem()
        while True:
            await asyncio.sleep(self.check_seconds)
            try:
                now = _digest(self._files())
                if now != digest:
                    self._context = self._new_context()
                    digest = now
                    log.info("admission webhooks: certificate files changed; reloaded")
                if self.on_ca is not None and self.ca_pem() != ca:
                    await self.on_ca(self.ca_pem())
                    ca = self.ca_pem()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - half-written files, API server away: try again
                log.warning("admission webhooks: certificate change not taken yet: %s", e)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
