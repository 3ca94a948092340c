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
from toolshare.settings import Settings
from toolshare.state.cache import CACHE, Source, limit_malloc_arenas, list_pages, release_memory

log = logging.getLogger("toolshare.state")
API_VERSION = model.API_VERSION
CHILD_SELECTOR = f"{model.LABEL_MANAGED_BY}={model.MANAGED_BY},{model.LABEL_RUN}"

# (api version, kind, plural, list path) of each child kind; only labelled children are listed.
CHILD_KINDS = (("v1", "Pod", "pods", "/api/v1/pods"), ("v1", "Service", "services", "/api/v1/services"),
               ("networking.k8s.io/v1", "Ingress", "ingresses", "/apis/networking.k8s.io/v1/ingresses"),
               ("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies",
                "/apis/networking.k8s.io/v1/networkpolicies"))
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


def runshares_by_principal(spec, body, **_):
    """"user:<name>" and "group:<name>" -> the shares naming them."""
    keys = [f"user:{u}" for u in spec.get("users") or [] if isinstance(u, str)]
    keys += [f"group:{g}" for g in spec.get("groups") or [] if isinstance(g, str)]
    return dict.fromkeys(keys, CACHE.packed(body)) if keys else None


def register_sharee_views() -> None:
    """Views for "Shared with me": the runs a user owns, the shares naming a user or a group."""
    if "toolruns_by_owner" not in CACHE.views:  # before anything is put: views fill on put
        CACHE.index("toolruns", CACHE.sources["toolruns"])(toolruns_by_owner)
        CACHE.index("runshares", CACHE.sources["runshares"])(runshares_by_principal)


def runs_owned_by(user: str) -> list[Mapping]:
    return CACHE.views["toolruns_by_owner"].get(user, [])


def shares_naming(user: str, groups) -> list[Mapping]:
    """Every share naming the user or one of the groups, once each."""
    found: dict[tuple[str, str], Mapping] = {}
    for key in [f"user:{user}", *(f"group:{g}" for g in groups)]:
        for share in CACHE.views["runshares_by_principal"].get(key, []):
            found[(share["metadata"]["namespace"], share["metadata"]["name"])] = share
    return [found[k] for k in sorted(found)]


def fill(kube) -> None:
    """LIST every watched kind into the cache (blocking), before any watch or handler starts."""
    started = time.monotonic()
    kinds = [("toolruns", API_VERSION, "ToolRun"), ("runshares", API_VERSION, "RunShare"),
             ("imageshares", API_VERSION, "ImageShare")]
    kinds += [(plural, api_version, kind) for api_version, kind, plural, _ in CHILD_KINDS]
    counts = {}
    limit_malloc_arenas()  # before the write threads start
    for plural, api_version, kind in kinds:
        # Page by page: at 10,000 runs a whole LIST of Pods alone is 140 MB of parsed JSON.
        counts[plural] = sum(CACHE.fill(plural, items) for items in
                             list_pages(kube, CACHE.sources[plural], api_version, kind))
    release_memory()
    log.info("cache filled in %.1fs: %s", time.monotonic() - started, counts)


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
    for _, _, plural, _ in CHILD_KINDS:
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
