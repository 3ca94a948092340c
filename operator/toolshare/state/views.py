"""The cluster as Toolshare's decisions need it: the one place the controller and the admission
webhooks read ToolRuns, RunShares, ImageShares and the children from.

Each view answers one question in O(1) per event, so nothing scans a namespace's runs or shares on
every event or admission request (10,000 runs at restart would otherwise be quadratic). The views
are filled by `fill` (a paginated LIST of every kind, before any handler runs) and kept current by
the controller, which feeds every watch event to CACHE.put / CACHE.drop.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping

from toolshare import model
from toolshare.images import parse_image
from toolshare.settings import ENVOY_GATEWAY, EXTERNAL_AUTH, TRAEFIK, Settings
from toolshare.state.cache import (CACHE, Source, collector_paused, interleaved, limit_malloc_arenas, list_pages,
                                   release_memory)

log = logging.getLogger("toolshare.state")
API_VERSION = model.API_VERSION
CHILD_SELECTOR = f"{model.LABEL_MANAGED_BY}={model.MANAGED_BY},{model.LABEL_RUN}"

# (api version, kind, plural, list path) of each child kind; only labelled children are listed.
_POD = ("v1", "Pod", "pods", "/api/v1/pods")
_SERVICE = ("v1", "Service", "services", "/api/v1/services")
_INGRESS = ("networking.k8s.io/v1", "Ingress", "ingresses", "/apis/networking.k8s.io/v1/ingresses")
_NETWORK_POLICY = ("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", "/apis/networking.k8s.io/v1/networkpolicies")
_HTTPROUTE = ("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes", "/apis/gateway.networking.k8s.io/v1/httproutes")
_MIDDLEWARE = ("traefik.io/v1alpha1", "Middleware", "middlewares", "/apis/traefik.io/v1alpha1/middlewares")
_SECURITY_POLICY = ("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy", "securitypolicies",
                    "/apis/gateway.envoyproxy.io/v1alpha1/securitypolicies")
# Every run has these; the routes are one family or the other (TOOLSHARE_ROUTING).
BASE_CHILD_KINDS = (_POD, _SERVICE, _NETWORK_POLICY)
INGRESS_KINDS = (_INGRESS,)
GATEWAY_KINDS = (_HTTPROUTE, _MIDDLEWARE, _SECURITY_POLICY)
# Every kind a child view exists for (a view of a kind never filled is an empty dict), in the
# order they are listed and watched.
CHILD_KINDS = (_POD, _SERVICE, _INGRESS, _NETWORK_POLICY, _HTTPROUTE, _MIDDLEWARE, _SECURITY_POLICY)
# What the operator lists, watches and reads children from: set by configure_kinds before the
# handlers are imported (manager.py); until then what ingress mode always had.
ACTIVE_CHILD_KINDS = (_POD, _SERVICE, _INGRESS, _NETWORK_POLICY)
ALL = "all"


class _Config:
    settings: Settings | None = None  # the host view needs the base domain


CONFIG = _Config()


def configure(settings: Settings) -> None:
    CONFIG.settings = settings


# --- the views ------------------------------------------------------------------------------

@CACHE.index("toolruns", Source(f"/apis/{API_VERSION}/toolruns"))
def toolruns_by_ns(namespace, body, **_):
    return {namespace: CACHE.packed(body)}


@CACHE.index("toolruns", Source(f"/apis/{API_VERSION}/toolruns"))
def toolruns_by_key(namespace, name, body, **_):
    return {(namespace, name): CACHE.packed(body)}


@CACHE.index("toolruns", Source(f"/apis/{API_VERSION}/toolruns"))
def toolruns_by_host(body, **_):
    if CONFIG.settings is None or model.validate_run(body):
        return None
    return {model.host_for(body, CONFIG.settings): CACHE.packed(body)}


@CACHE.index("runshares", Source(f"/apis/{API_VERSION}/runshares"))
def runshares_by_key(namespace, name, body, **_):
    return {(namespace, name): CACHE.packed(body)}


@CACHE.index("runshares", Source(f"/apis/{API_VERSION}/runshares"))
def runshares_by_run(namespace, spec, body, **_):
    """Shares naming one run (runRef)."""
    ref = (spec.get("runRef") or {}).get("name")
    return {(namespace, sys.intern(ref)): CACHE.packed(body)} if ref and not spec.get("runSelector") else None


@CACHE.index("runshares", Source(f"/apis/{API_VERSION}/runshares"))
def runshares_with_selector(namespace, spec, body, **_):
    """Shares selecting runs by label: the only ones that need the namespace's runs."""
    return {namespace: CACHE.packed(body)} if spec.get("runSelector") is not None else None


@CACHE.index("imageshares", Source(f"/apis/{API_VERSION}/imageshares"))
def imageshares_all(body, **_):
    return {ALL: CACHE.packed(body)}


@CACHE.index("imageshares", Source(f"/apis/{API_VERSION}/imageshares"))
def imageshares_by_repository(spec, body, **_):
    image = spec.get("image")
    return {parse_image(image).repository: CACHE.packed(body)} if isinstance(image, str) and image else None


def _child_view(plural: str, path: str):
    # The packed projection (cache.project): a Pod keeps only its metadata and status.phase (it
    # is compared by render hash; the phase feeds the run's status), other children what the
    # comparison with their desired state reads.
    def view(namespace, labels, body, **_):
        if model.LABEL_RUN not in labels:
            return None
        return {(namespace, sys.intern(labels[model.LABEL_RUN])): CACHE.packed(body)}

    view.__name__ = f"child_{plural}"
    return CACHE.index(plural, Source(path, CHILD_SELECTOR))(view)


for _api_version, _kind, _plural, _path in CHILD_KINDS:
    _child_view(_plural, _path)


# --- the gate's views: whose runs, and which shares name whom (only the gate registers them) --

def toolruns_by_owner(spec, body, **_):
    owner = spec.get("owner")
    return {owner: CACHE.packed(body)} if isinstance(owner, str) else None


def toolrun_keys_by_owner(namespace, name, spec, **_):
    """owner -> (namespace, name, what the page's search looks in): the owner's view lists and
    searches a thousand runs from these small tuples and unpacks only the page it shows."""
    owner = spec.get("owner")
    if not isinstance(owner, str):
        return None
    endpoints = [ep.get("name") for ep in spec.get("endpoints") or [] if isinstance(ep, Mapping)]
    text = " ".join([name, namespace or "", str(spec.get("image") or ""),
                     *(e for e in endpoints if isinstance(e, str))]).lower()
    return {owner: (namespace, name, text)}


def runshares_by_principal(spec, body, **_):
    """"user:<name>" and "group:<name>" -> the shares naming them."""
    keys = [f"user:{u}" for u in spec.get("users") or [] if isinstance(u, str)]
    keys += [f"group:{g}" for g in spec.get("groups") or [] if isinstance(g, str)]
    return dict.fromkeys(keys, CACHE.packed(body)) if keys else None


def register_sharee_views() -> None:
    """Views for "Shared with me": the runs a user owns, the shares naming a user or a group."""
    if "toolruns_by_owner" not in CACHE.views:  # before anything is put: views fill on put
        CACHE.index("toolruns", CACHE.sources["toolruns"])(toolruns_by_owner)
        CACHE.index("toolruns", CACHE.sources["toolruns"])(toolrun_keys_by_owner)
        CACHE.index("runshares", CACHE.sources["runshares"])(runshares_by_principal)


def runs_owned_by(user: str) -> list[Mapping]:
    return CACHE.views["toolruns_by_owner"].get(user, [])


def run_keys_owned_by(user: str) -> list[tuple[str, str, str]]:
    """(namespace, name, search text) of every run the user owns, nothing unpacked."""
    return CACHE.views["toolrun_keys_by_owner"].get(user, [])


def shares_naming(user: str, groups) -> list[Mapping]:
    """Every share naming the user or one of the groups, once each."""
    found: dict[tuple[str, str], Mapping] = {}
    for key in [f"user:{user}", *(f"group:{g}" for g in groups)]:
        for share in CACHE.views["runshares_by_principal"].get(key, []):
            found[(share["metadata"]["namespace"], share["metadata"]["name"])] = share
    return [found[k] for k in sorted(found)]


# --- which route kinds: decided once, before kopf starts --------------------------------------

class KindsUnavailable(RuntimeError):
    """A kind the configured routing needs is not served or not listable; the message says which."""


# Why each route kind may be required, for the start-up error when it is not served.
_NEEDED_FOR = {
    "Ingress": "TOOLSHARE_ROUTING=ingress needs Ingresses (networking.k8s.io/v1)",
    "HTTPRoute": ("TOOLSHARE_ROUTING=gateway needs the HTTPRoute CRD (gateway.networking.k8s.io/v1) of the "
                  "Gateway API; TOOLSHARE_GATEWAY_AUTH=external-auth needs its experimental channel"),
    "Middleware": "TOOLSHARE_GATEWAY_AUTH=traefik needs Traefik's Middleware CRD (traefik.io/v1alpha1)",
    "SecurityPolicy": ("TOOLSHARE_GATEWAY_AUTH=envoy-gateway needs Envoy Gateway's SecurityPolicy CRD "
                       "(gateway.envoyproxy.io/v1alpha1)"),
}
HTTPROUTE_CRD = "httproutes.gateway.networking.k8s.io"
CHANNEL_ANNOTATION = "gateway.networking.k8s.io/channel"


def required_kinds(settings: Settings) -> tuple[str, ...]:
    """The route kinds the configured routing writes: without them it cannot run."""
    if not settings.gateway_routing:
        return ("Ingress",)
    return ("HTTPRoute",) + {TRAEFIK: ("Middleware",), ENVOY_GATEWAY: ("SecurityPolicy",)}.get(settings.gateway_auth, ())


def configure_kinds(settings: Settings, served: set[str]) -> tuple[tuple[str, str, str, str], ...]:
    """Decide ACTIVE_CHILD_KINDS: every run's kinds, the configured routing's, and every other route
    kind in `served` (what probe_kinds found served and listable). Watching the other kinds is what
    removes a run's routes of the other family after TOOLSHARE_ROUTING (or the auth flavour) changed:
    they are then children that are not desired. Call it before the handlers are imported."""
    global ACTIVE_CHILD_KINDS
    wanted = set(required_kinds(settings)) | set(served)
    ACTIVE_CHILD_KINDS = tuple(k for k in CHILD_KINDS if k in BASE_CHILD_KINDS or k[1] in wanted)
    log.info("watching children of kinds %s", ", ".join(k[1] for k in ACTIVE_CHILD_KINDS))
    return ACTIVE_CHILD_KINDS


def probe_kinds(kube, settings: Settings) -> set[str]:
    """Which route kinds (Ingress and the Gateway ones) the API server serves and lets us list
    (blocking): one LIST of at most one labelled object each. A kind the configured routing needs
    and cannot have raises KindsUnavailable naming it; another kind not served is skipped silently,
    one not listable (403) with a warning, since its leftovers then cannot be cleaned up."""
    required = required_kinds(settings)
    served: set[str] = set()
    problems: list[str] = []
    for api_version, kind, plural, path in INGRESS_KINDS + GATEWAY_KINDS:
        status = _probe(kube, path)
        if status == 200:
            served.add(kind)
        elif kind in required:
            problems.append(f"{_NEEDED_FOR[kind]}: " + (
                f"{path} is not served (install the CRD)" if status == 404 else
                f"listing {plural} is forbidden to the operator (RBAC: manifests/rbac/operator-clusterrole-gateway.yaml "
                "for the Gateway kinds)" if status == 403 else f"listing {path} answered {status}"))
        elif status == 403:
            log.warning("%s (%s) are served but the operator may not list them: routes of that kind left by an "
                        "earlier TOOLSHARE_ROUTING or TOOLSHARE_GATEWAY_AUTH are not cleaned up", plural, api_version)
        elif status != 404:
            log.warning("probing %s answered %s: not watching %s", path, status, plural)
    if not problems and settings.gateway_routing and settings.gateway_auth == EXTERNAL_AUTH:
        channel = _httproute_channel(kube)
        if channel not in (None, "experimental"):
            problems.append(f"{_NEEDED_FOR['HTTPRoute']}: the installed HTTPRoute CRD is of the {channel!r} channel, "
                            "which refuses the ExternalAuth filter")
    if problems:
        raise KindsUnavailable("the configured routing cannot run:\n  " + "\n  ".join(problems))
    return served


def _probe(kube, path: str, timeout: float = 60.0) -> int:
    """The HTTP status of a one-item labelled LIST of `path`; transient failures (the API server
    away, 429, 5xx) are retried for `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            kube.request("GET", path, query=[("limit", "1"), ("labelSelector", CHILD_SELECTOR)])
            return 200
        except Exception as e:  # noqa: BLE001 - an ApiError (status), or the client library's connection error
            status = getattr(e, "status", 0)
            if isinstance(status, int) and 400 <= status < 500 and status != 429:
                return status
            error = e
        if time.monotonic() > deadline:
            raise KindsUnavailable(f"probing {path} failed for {timeout:.0f}s: {error}") from error
        log.warning("probing %s failed (%s); trying again", path, error)
        time.sleep(1.0)


def _httproute_channel(kube) -> str | None:
    """The Gateway API release channel of the installed HTTPRoute CRD (its channel annotation);
    None when it cannot be told (no annotation, or the CRD not listable)."""
    try:
        found = kube.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                             query=[("fieldSelector", f"metadata.name={HTTPROUTE_CRD}")])
    except Exception as e:  # noqa: BLE001 - only a check: the API server refuses bad routes anyway
        log.warning("could not read the %s CRD to check its channel: %s", HTTPROUTE_CRD, e)
        return None
    for crd in found.get("items") or []:
        return ((crd.get("metadata") or {}).get("annotations") or {}).get(CHANNEL_ANNOTATION)
    return None


def fill(kube) -> dict[str, str]:
    """LIST every watched kind into the cache (blocking), before any watch or handler starts.
    Returns the resourceVersion each kind was listed at: a watch from there misses nothing."""
    started = time.monotonic()
    kinds = [("toolruns", API_VERSION, "ToolRun"), ("runshares", API_VERSION, "RunShare"),
             ("imageshares", API_VERSION, "ImageShare")]
    kinds += [(plural, api_version, kind) for api_version, kind, plural, _ in ACTIVE_CHILD_KINDS]
    limit_malloc_arenas()  # before the write threads start
    # Page by page (at 10,000 runs a whole LIST of Pods alone is 140 MB of parsed JSON), several
    # kinds at once; every kind is stored by this thread alone.
    listed: dict[str, dict] = {plural: {} for plural, _, _ in kinds}
    streams = {plural: list_pages(kube, CACHE.sources[plural], api_version, kind, listed=listed[plural])
               for plural, api_version, kind in kinds}
    counts = dict.fromkeys(streams, 0)
    with collector_paused():
        for plural, items in interleaved(streams):
            counts[plural] += CACHE.fill(plural, items)
    versions = {plural: listed[plural].get("resourceVersion", "") for plural in streams}
    release_memory()
    log.info("cache filled in %.1fs: %s", time.monotonic() - started, counts)
    return versions


# --- the questions --------------------------------------------------------------------------

def run(namespace: str, name: str) -> Mapping | None:
    return next(iter(CACHE.views["toolruns_by_key"].get((namespace, name), [])), None)


def share(namespace: str, name: str) -> Mapping | None:
    return next(iter(CACHE.views["runshares_by_key"].get((namespace, name), [])), None)


def runs_in(namespace: str) -> dict[str, Mapping]:
    return {r["metadata"]["name"]: r for r in CACHE.views["toolruns_by_ns"].get(namespace, [])}


def runs_on_host(host: str) -> list[Mapping]:
    return CACHE.views["toolruns_by_host"].get(host, [])


def shares_for(namespace: str, run_name: str) -> list[Mapping]:
    """Shares that may apply to one run: those naming it, and those selecting by label."""
    return [*CACHE.views["runshares_by_run"].get((namespace, run_name), []),
            *CACHE.views["runshares_with_selector"].get(namespace, [])]


def runs_for(namespace: str, run: Mapping, shares: list[Mapping]) -> dict[str, Mapping]:
    """The runs a share verdict needs: the run itself, or the namespace's if a selector is involved."""
    if any((s.get("spec") or {}).get("runSelector") is not None for s in shares):
        return runs_in(namespace)
    return {run["metadata"]["name"]: run}


def share_runs(namespace: str, share: Mapping) -> dict[str, Mapping]:
    """The runs a share may apply to: the one it names (O(1)), or the namespace's for a selector.
    Admission asks the same question on every RunShare write, so it must not scan the namespace."""
    spec = share.get("spec") or {}
    if spec.get("runSelector") is not None:
        return runs_in(namespace)
    ref = (spec.get("runRef") or {}).get("name")
    found = run(namespace, ref) if ref else None
    return {ref: found} if found is not None else {}


def children(namespace: str, run_name: str) -> dict[tuple[str, str], Mapping]:
    """(kind, name) -> the run's children as the cache holds them."""
    out = {}
    for _, _, plural, _ in ACTIVE_CHILD_KINDS:
        for obj in CACHE.views[f"child_{plural}"].get((namespace, run_name), []):
            out[(obj["kind"], obj["metadata"]["name"])] = obj
    return out


def imageshares() -> list[Mapping]:
    """Every ImageShare in the cluster (claims are cluster-wide)."""
    return list(CACHE.views["imageshares_all"].get(ALL, []))


def imageshares_of(image: str) -> list[Mapping]:
    """The ImageShares of the image's repository: all that decide who may use it."""
    return CACHE.views["imageshares_by_repository"].get(parse_image(image).repository, [])


def image_repository(share: Mapping) -> str | None:
    image = (share.get("spec") or {}).get("image")
    return parse_image(image).repository if isinstance(image, str) and image else None
