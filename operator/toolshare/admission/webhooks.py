"""Admission webhooks served by the operator: the hooks, their TLS certificates, the directory cache.

The decisions are decisions.py's pure functions; this module hands them the request's identity and
what the operator's indexes hold (no API call per request, except the directory ConfigMap, read at
most every DIRECTORY_TTL seconds). The operator applies the configurations (webhookconfig.py, with
matchConditions that skip a mutation which would change nothing) once its server listens, and
never removes them: failurePolicy Fail then makes the API server refuse ToolRun, RunShare and
ImageShare writes while the operator is down instead of admitting them unchecked.

Configuration (environment, or `toolshare operator` flags):
  TOOLSHARE_WEBHOOK_LISTEN   address:port the HTTPS server listens on (default 127.0.0.1:9443)
  TOOLSHARE_WEBHOOK_HOST     host name or IP the API server calls (default: the listen address,
                             127.0.0.1 when listening on 0.0.0.0); must be in the certificate
  TOOLSHARE_WEBHOOK_CERT_DIR where the CA and serving certificate live (created if missing)
  TOOLSHARE_WEBHOOK_CONFIG   name of the Validating/MutatingWebhookConfiguration the operator
                             manages (default toolshare.dev; "none" when manifests install them)
  TOOLSHARE_WEBHOOK_CERTS    "generate" (default: CA and serving certificate made and renewed in
                             the cert dir) or "provided" (tls.crt, tls.key and optional ca.crt
                             mounted there, e.g. from Helm or cert-manager; read, never written)
  TOOLSHARE_WEBHOOK_SERVICE  NAMESPACE/NAME[:PORT] of the Service in front of the operator: the
                             managed configurations then name it instead of a URL (in-cluster)
  TOOLSHARE_WEBHOOK_CLIENT_CA    PEM file of the CA whose client certificates may call the
                             webhooks (the API server's, from its AdmissionConfiguration); unset:
                             callers are not authenticated (a warning at start)
  TOOLSHARE_WEBHOOK_CLIENT_NAMES comma-separated common or DNS names such a certificate must carry
                             (default kube-apiserver-webhook-client)
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

import urllib3

from toolshare import access, podtemplate
from toolshare.admission import decisions as admission, webhookconfig
from toolshare.admission.certs import ensure_certs, provided_certs
from toolshare.admission.decisions import Requester
from toolshare.admission.directory import Directory, DirectoryError, parse
from toolshare.admission.server import DEFAULT_CLIENT_NAME, Refused, Review, Server, pointer
from toolshare.client.kube import ApiError, Kube
from toolshare.policy import Policy
from toolshare.state import views

log = logging.getLogger("toolshare.webhooks")
DIRECTORY_TTL = 2.0


@dataclasses.dataclass(frozen=True)
class WebhookConfig:
    listen_addr: str = "127.0.0.1"
    port: int = 9443
    host: str = ""
    cert_dir: Path = Path(os.path.expanduser("~/.cache/toolshare/webhook"))
    managed: str = "toolshare.dev"
    certs: str = "generate"  # or "provided"
    service: tuple[str, str, int] | None = None  # (namespace, name, port) the API server calls
    client_ca: Path | None = None  # callers must present a certificate from this CA ...
    client_names: frozenset[str] = frozenset({DEFAULT_CLIENT_NAME})  # ... naming one of these

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> WebhookConfig:
        kwargs: dict = {}
        if (listen := env.get("TOOLSHARE_WEBHOOK_LISTEN", "").strip()):
            addr, _, port = listen.rpartition(":")
            if not addr or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"TOOLSHARE_WEBHOOK_LISTEN={listen!r}: must be ADDRESS:PORT")
            kwargs.update(listen_addr=addr, port=int(port))
        if (host := env.get("TOOLSHARE_WEBHOOK_HOST", "").strip()):
            kwargs["host"] = host
        if (cert_dir := env.get("TOOLSHARE_WEBHOOK_CERT_DIR", "").strip()):
            kwargs["cert_dir"] = Path(cert_dir)
        if (managed := env.get("TOOLSHARE_WEBHOOK_CONFIG", "").strip()):
            kwargs["managed"] = managed
        if (certs := env.get("TOOLSHARE_WEBHOOK_CERTS", "").strip()):
            if certs not in ("generate", "provided"):
                raise ValueError(f"TOOLSHARE_WEBHOOK_CERTS={certs!r}: must be generate or provided")
            kwargs["certs"] = certs
        if (service := env.get("TOOLSHARE_WEBHOOK_SERVICE", "").strip()):
            kwargs["service"] = parse_service(service)
        if (client_ca := env.get("TOOLSHARE_WEBHOOK_CLIENT_CA", "").strip()):
            kwargs["client_ca"] = Path(client_ca)
        if (names := env.get("TOOLSHARE_WEBHOOK_CLIENT_NAMES", "").strip()):
            kwargs["client_names"] = parse_client_names(names)
        return cls(**kwargs)

    @property
    def advertised_host(self) -> str:
        if self.host:
            return self.host
        if self.service:
            return f"{self.service[1]}.{self.service[0]}.svc"
        return "127.0.0.1" if self.listen_addr in ("0.0.0.0", "") else self.listen_addr


def parse_service(text: str) -> tuple[str, str, int]:
    ref, _, port = text.partition(":")
    ns, slash, name = ref.partition("/")
    if not slash or not ns or not name or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError(f"TOOLSHARE_WEBHOOK_SERVICE={text!r}: must be NAMESPACE/NAME[:PORT]")
    return ns, name, int(port or 443)


def parse_client_names(text: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in text.split(","))
    if "" in names:
        raise ValueError(f"TOOLSHARE_WEBHOOK_CLIENT_NAMES={text!r}: must be comma-separated names, none empty")
    return names


def client_config(config: WebhookConfig, ca_pem: bytes) -> dict:
    """How the API server reaches the server: a URL, or the Service in front of the operator."""
    out: dict = {"caBundle": base64.b64encode(ca_pem).decode("ascii")}
    if config.service:
        ns, name, port = config.service
        out["service"] = {"namespace": ns, "name": name, "port": port}
    else:
        out["url"] = f"https://{config.advertised_host}:{config.port}"
    return out


def apply_configurations(name: str, client_config: dict) -> None:
    bodies = [*webhookconfig.configurations(name, client_config, ST.policy),
              *webhookconfig.owner_policy(name, ST.policy), *webhookconfig.principals_policy(name)]
    for body in bodies:
        plural = webhookconfig.PLURALS[body["kind"]]
        ST.kube.request("PATCH", f"/apis/admissionregistration.k8s.io/v1/{plural}/{name}", body=body,
                        query=[("fieldManager", ST.kube.field_manager), ("force", "true")],
                        content_type="application/apply-patch+yaml", kind=body["kind"])
    log.info("webhook configurations %s point at %s", name,
             client_config.get("url") or client_config.get("service"))


# --- startup and the directory -----------------------------------------------------------

class State:
    policy: Policy = Policy()
    kube: Kube | None = None
    directory: tuple[float, Directory | None, str | None] = (0.0, None, None)  # (read at, dir, error)
    lock: asyncio.Lock | None = None


ST = State()


async def start() -> Server:
    """Serve the hooks (the controller has filled the cache they read: manager.py) and point the
    configurations at them, as kopf did; like kopf's, they stay when the operator stops
    (failurePolicy Fail)."""
    config = WebhookConfig.from_env()
    ST.policy = Policy.from_env()
    ST.kube = Kube.from_environment()
    if config.certs == "provided":
        ca, cert, key = provided_certs(config.cert_dir)
    else:
        ca, cert, key = ensure_certs(config.cert_dir, config.advertised_host)

    async def configure(ca_pem: bytes) -> None:
        if config.managed != "none":
            await asyncio.to_thread(apply_configurations, config.managed, client_config(config, ca_pem))

    server = Server(HOOKS, config.listen_addr, config.port, cert, key, ca, on_ca=configure,
                    client_ca=config.client_ca, client_names=config.client_names)
    await server.start()
    log.info("admission webhooks on https://%s:%d (config %s), policy %s",
             config.advertised_host, config.port, config.managed, ST.policy)
    return server


def _read_directory() -> tuple[Directory | None, str | None]:
    ref = ST.policy.directory_ref
    if ref is None:
        return None, None
    try:
        cm = ST.kube.request("GET", f"/api/v1/namespaces/{ref[0]}/configmaps/{ref[1]}")
    except ApiError as e:
        if e.status == 404:
            if ST.directory[1] is not None or not ST.directory[0]:
                log.warning("directory ConfigMap %s/%s not found: principals are not checked", *ref)
            return None, None
        return None, f"the directory ConfigMap {ref[0]}/{ref[1]} cannot be read ({e.status})"
    except (urllib3.exceptions.HTTPError, OSError) as e:  # the API server is away (restarting)
        return None, f"the directory ConfigMap {ref[0]}/{ref[1]} cannot be read (API server unreachable: {e})"
    try:
        return parse(cm.get("data")), None
    except DirectoryError as e:
        return None, f"the directory ConfigMap {ref[0]}/{ref[1]} is malformed: {e}"


async def directory() -> Directory | None:
    """The directory, re-read at most every DIRECTORY_TTL seconds; a broken one refuses requests."""
    if ST.lock is None:
        ST.lock = asyncio.Lock()
    async with ST.lock:
        read_at, found, error = ST.directory
        if time.monotonic() - read_at > DIRECTORY_TTL:
            found, error = await asyncio.to_thread(_read_directory)
            ST.directory = (time.monotonic(), found, error)
    if error:
        raise Refused(error, code=503)
    return found


def _refuse(problem: str | None) -> None:
    if problem is not None:
        raise Refused(problem, code=403)


# --- ToolRun and ImageShare: the owner ---------------------------------------------------

def _set_owner(kind: str, review: Review) -> list[dict]:
    req = Requester.from_userinfo(review.userinfo)
    owner = admission.owner_to_set(review.operation, review.body, review.old_object, req)
    if owner is None:
        return []
    if owner == req.username:
        _refuse(admission.requester_problem(req, kind))
    spec = review.body.get("spec")
    if not isinstance(spec, Mapping):
        return [{"op": "add", "path": "/spec", "value": {"owner": owner}}]
    return [{"op": "add", "path": pointer("spec", "owner"), "value": owner}]


async def mutate_toolrun(review: Review) -> list[dict]:
    return _set_owner("ToolRun", review)


async def mutate_imageshare(review: Review) -> list[dict]:
    return _set_owner("ImageShare", review)


async def validate_toolrun(review: Review) -> list[dict]:
    req = Requester.from_userinfo(review.userinfo)
    body, old = review.body, review.old_object
    _refuse(admission.toolrun_problem(review.operation, body, old, req, ST.policy, views.imageshares(),
                                      await directory()))
    # Every Secret, ConfigMap, claim and service account the Pod would use: the writer's own
    # access, asked of the API server's authorizer (a run must not read what its writer cannot).
    # Only what this write adds: the operator's own patches (finalizers) name nothing new.
    for ref in podtemplate.added_references(body, old):
        _refuse(admission.reference_problem(ref, await may_use(review.userinfo, review.namespace, ref), req,
                                            review.namespace))
    return []


async def may_use(userinfo: Mapping | None, namespace: str, ref: podtemplate.Reference) -> bool:
    """A SubjectAccessReview as the requester; an unanswered one refuses the write (503)."""
    userinfo = userinfo or {}
    attributes = {"namespace": namespace, "verb": ref.verb, "resource": ref.resource, "name": ref.name,
                  **({"subresource": ref.subresource} if ref.subresource else {})}
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": userinfo.get("username") or "", "groups": list(userinfo.get("groups") or []),
                       "uid": userinfo.get("uid") or "",
                       "extra": {k: list(v) for k, v in (userinfo.get("extra") or {}).items()},
                       "resourceAttributes": attributes}}
    try:
        answer = await ST.kube.arequest("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=review,
                                        kind="SubjectAccessReview")
    except ApiError as e:
        raise Refused(f"{ref.field}: cannot check access to {ref.kind} {ref.name!r} "
                      f"({e.status_message[:200]}); refused until it can be checked", code=503)
    return bool((answer.get("status") or {}).get("allowed"))


async def validate_imageshare(review: Review) -> list[dict]:
    _refuse(admission.imageshare_problem(review.operation, review.body, review.old_object,
                                         Requester.from_userinfo(review.userinfo), ST.policy,
                                         views.imageshares(), await directory()))
    return []


# --- RunShare: the sharer ----------------------------------------------------------------

async def mutate_runshare(review: Review) -> list[dict]:
    req = Requester.from_userinfo(review.userinfo)
    _refuse(admission.requester_problem(req, "RunShare"))
    annotations = access.sharer_annotations(req.username, req.groups, ST.policy)
    metadata = review.body.get("metadata") or {}
    if not isinstance(metadata.get("annotations"), Mapping):
        return [{"op": "add", "path": "/metadata/annotations", "value": dict(annotations)}]
    return [{"op": "add", "path": pointer("metadata", "annotations", key), "value": value}
            for key, value in annotations.items()]


async def validate_runshare(review: Review) -> list[dict]:
    req = Requester.from_userinfo(review.userinfo)
    namespace, operation, old = review.namespace, review.operation, review.old_object
    if operation in ("UPDATE", "DELETE") and old is not None:
        # The API server skips a DELETE by the sharer or an administrator, and an UPDATE by the
        # sharer that only narrows (webhookconfig.py), so they can unshare with the operator down;
        # anyone else is asked about here.
        _refuse(admission.share_change_problem(operation, old, req, ST.policy, views.share_runs(namespace, old)))
        if operation == "DELETE":
            return []
    # Also checked here: the sharer webhook is skipped when the annotations already name this
    # requester (webhookconfig.py), which a requester with a malformed name could arrange.
    _refuse(admission.requester_problem(req, "RunShare"))
    body = review.body
    _refuse(admission.runshare_problem(body, req, ST.policy, views.share_runs(namespace, body), views.imageshares(),
                                       await directory(), lambda run: views.shares_for(namespace, run)))
    return []


# The hook each configured webhook's path names, and the resource it reviews (webhookconfig.HOOKS:
# the same ids and plurals, tests/unit/test_webhooks.py).
HOOKS = {"toolrun-owner": ("toolruns", mutate_toolrun), "imageshare-owner": ("imageshares", mutate_imageshare),
         "runshare-sharer": ("runshares", mutate_runshare), "toolrun-admission": ("toolruns", validate_toolrun),
         "imageshare-admission": ("imageshares", validate_imageshare),
         "runshare-admission": ("runshares", validate_runshare)}
