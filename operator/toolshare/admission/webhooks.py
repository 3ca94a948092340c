"""Admission webhooks served by the operator: kopf wiring, TLS certificates, the directory cache.

The decisions are admission.py's pure functions; this module hands them the request's identity and
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
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

import kopf
import urllib3

from toolshare import access, model, podtemplate
from toolshare.admission import decisions as admission, webhookconfig
from toolshare.admission.certs import ensure_certs, provided_certs
from toolshare.admission.decisions import Requester
from toolshare.admission.directory import Directory, DirectoryError, parse
from toolshare.client.kube import ApiError, Kube
from toolshare.policy import Policy
from toolshare.state import views

log = logging.getLogger("toolshare.webhooks")
GROUP, VERSION = model.GROUP, model.VERSION
OPERATIONS = ["CREATE", "UPDATE"]
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


class ManagedWebhookServer(kopf.WebhookServer):
    """kopf's server; once it listens, the configurations (webhookconfig.py) are applied pointing
    at it, as a Service reference when in-cluster. Applied by us rather than kopf's `managed`
    mode because kopf cannot write matchConditions; like kopf's, they stay when the operator
    stops (failurePolicy Fail)."""

    def __init__(self, *, managed: str | None, service: tuple[str, str, int] | None, **kwargs):
        super().__init__(**kwargs)
        self.managed, self.service = managed, service

    async def __call__(self, fn):
        async for config in super().__call__(fn):
            if self.service:
                ns, name, port = self.service
                config.pop("url", None)
                config = {**config, "service": {"namespace": ns, "name": name, "port": port}}
            if self.managed:
                await asyncio.to_thread(apply_configurations, self.managed, dict(config))
            yield config


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


@kopf.on.startup()
def configure_webhooks(settings: kopf.OperatorSettings, **_) -> None:
    config = WebhookConfig.from_env()
    ST.policy = Policy.from_env()
    ST.kube = Kube.from_environment()
    if config.certs == "provided":
        ca, cert, key = provided_certs(config.cert_dir)
    else:
        ca, cert, key = ensure_certs(config.cert_dir, config.advertised_host)
    server_args = dict(addr=config.listen_addr, port=config.port, host=config.advertised_host,
                       certfile=str(cert), pkeyfile=str(key), cafile=str(ca) if ca else None)
    settings.admission.server = ManagedWebhookServer(
        managed=None if config.managed == "none" else config.managed, service=config.service, **server_args)
    settings.admission.managed = None  # ManagedWebhookServer writes them, with matchConditions
    log.info("admission webhooks on https://%s:%d (config %s), policy %s",
             config.advertised_host, config.port, config.managed, ST.policy)


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
        raise kopf.AdmissionError(error, code=503)
    return found


def _refuse(problem: str | None) -> None:
    if problem is not None:
        raise kopf.AdmissionError(problem, code=403)


# --- ToolRun and ImageShare: the owner ---------------------------------------------------

def _set_owner(kind: str, operation, body, old, userinfo, patch) -> None:
    req = Requester.from_userinfo(userinfo)
    owner = admission.owner_to_set(operation, body, old, req)
    if owner is None:
        return
    if owner == req.username:
        _refuse(admission.requester_problem(req, kind))
    patch.spec["owner"] = owner


@kopf.on.mutate(GROUP, VERSION, "toolruns", id="toolrun-owner", operations=OPERATIONS, persistent=True)
async def mutate_toolrun(operation, body, old, userinfo, patch, **_):
    _set_owner("ToolRun", operation, body, old, userinfo, patch)


@kopf.on.mutate(GROUP, VERSION, "imageshares", id="imageshare-owner", operations=OPERATIONS, persistent=True)
async def mutate_imageshare(operation, body, old, userinfo, patch, **_):
    _set_owner("ImageShare", operation, body, old, userinfo, patch)


@kopf.on.validate(GROUP, VERSION, "toolruns", id="toolrun-admission", operations=OPERATIONS, persistent=True)
async def validate_toolrun(operation, body, old, namespace, userinfo, **_):
    req = Requester.from_userinfo(userinfo)
    _refuse(admission.toolrun_problem(operation, body, old, req, ST.policy, views.imageshares(), await directory()))
    # Every Secret, ConfigMap, claim and service account the Pod would use: the writer's own
    # access, asked of the API server's authorizer (a run must not read what its writer cannot).
    # Only what this write adds: the operator's own patches (finalizers) name nothing new.
    for ref in podtemplate.added_references(body, old):
        _refuse(admission.reference_problem(ref, await may_use(userinfo, namespace, ref), req, namespace))


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
        raise kopf.AdmissionError(f"{ref.field}: cannot check access to {ref.kind} {ref.name!r} "
                                  f"({e.status_message[:200]}); refused until it can be checked", code=503)
    return bool((answer.get("status") or {}).get("allowed"))


@kopf.on.validate(GROUP, VERSION, "imageshares", id="imageshare-admission", operations=OPERATIONS, persistent=True)
async def validate_imageshare(operation, body, old, userinfo, **_):
    _refuse(admission.imageshare_problem(operation, body, old, Requester.from_userinfo(userinfo), ST.policy,
                                         views.imageshares(), await directory()))


# --- RunShare: the sharer ----------------------------------------------------------------

@kopf.on.mutate(GROUP, VERSION, "runshares", id="runshare-sharer", operations=OPERATIONS, persistent=True)
async def mutate_runshare(userinfo, patch, **_):
    req = Requester.from_userinfo(userinfo)
    _refuse(admission.requester_problem(req, "RunShare"))
    for key, value in access.sharer_annotations(req.username, req.groups, ST.policy).items():
        patch.metadata.annotations[key] = value


@kopf.on.validate(GROUP, VERSION, "runshares", id="runshare-admission", operations=[*OPERATIONS, "DELETE"],
                  persistent=True)
async def validate_runshare(operation, body, old, namespace, userinfo, **_):
    req = Requester.from_userinfo(userinfo)
    if operation in ("UPDATE", "DELETE") and old is not None:
        # The API server skips a DELETE by the sharer or an administrator, and an UPDATE by the
        # sharer that only narrows (webhookconfig.py), so they can unshare with the operator down;
        # anyone else is asked about here.
        _refuse(admission.share_change_problem(operation, old, req, ST.policy, views.share_runs(namespace, old)))
        if operation == "DELETE":
            return
    # Also checked here: the sharer webhook is skipped when the annotations already name this
    # requester (webhookconfig.py), which a requester with a malformed name could arrange.
    _refuse(admission.requester_problem(req, "RunShare"))
    _refuse(admission.runshare_problem(body, req, ST.policy, views.share_runs(namespace, body), views.imageshares(),
                                       await directory(), lambda run: views.shares_for(namespace, run)))
