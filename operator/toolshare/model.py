"""The resource model: names, grammars and validation of ToolRuns and RunShares. Pure.

Everything here reads the API objects as plain mappings and never trusts their shape: the CRD
schema is the first line of defence, these functions the second. What a run exposes (its HTTP and
SSH endpoints), what its children are called, which host it answers on and which runs a share
targets are decided here and nowhere else; the access decisions are in access.py, the children in
render/.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from toolshare.principals import DNS_LABEL_MAX_LENGTH, is_dns_label, is_valid_principal
from toolshare.settings import Settings

GROUP, VERSION = "toolshare.dev", "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "toolshare"
LABEL_RUN = "toolshare.dev/run"
LABEL_ENDPOINT = "toolshare.dev/endpoint"

SSH_PORT = 22
HTTP_PROTOCOLS = ("http", "https")
PROTOCOLS = ("http", "https", "ssh")
MAX_PRINCIPALS = 256
# Users and groups of one run, all its shares together: its Ingress annotations (at most 253
# characters each, comma-separated) then always fit in the API server's 256 KiB.
MAX_RUN_PRINCIPALS = 800
CONTAINER_NAME = "tool"
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

# Share reasons (CamelCase, as in conditions).
ACTIVE, RUN_NOT_FOUND, EXPIRED, INVALID = "Active", "RunNotFound", "Expired", "Invalid"

# Same grammars as the CRDs. Run names become Service names, which must be DNS-1035 labels.
RUN_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# Endpoint names become container and Service port names (IANA service names).
ENDPOINT_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ENDPOINT_NAME_MAX_LENGTH = 15
# Canonical URL path: "/" or "/seg[/seg...]" of unreserved characters, no trailing slash.
PATH_RE = re.compile(r"^/([A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*)?$")
PATH_MAX_LENGTH = 256
# A "." or ".." segment: the API server refuses it in an Ingress path, so such a run would sit at
# ApplyFailed; the CRD refuses it first (same regex).
DOT_SEGMENT_PATTERN = r"(^|/)\.\.?(/|$)"
DOT_SEGMENT_RE = re.compile(DOT_SEGMENT_PATTERN)
# Friendly names that would take a host Toolshare itself serves (the sign-in host, auth.<domain>);
# the administrator adds more (TOOLSHARE_RESERVED_NAMES).
RESERVED_NAMES = ("auth",)
_LABEL_KEY_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")


class Endpoint(NamedTuple):
    name: str
    port: int
    protocol: str
    path: str


# --- reading the API objects -------------------------------------------------------------


def get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else []


def name_of(obj: Any) -> str:
    return get(obj, "metadata", "name") or ""


def namespace_of(obj: Any) -> str:
    return get(obj, "metadata", "namespace") or ""


def spec_of(obj: Any) -> Mapping:
    spec = get(obj, "spec")
    return spec if isinstance(spec, Mapping) else {}


def is_run_name(name: object) -> bool:
    return isinstance(name, str) and len(name) <= 63 and RUN_NAME_RE.fullmatch(name) is not None


def is_endpoint_name(name: object) -> bool:
    return (isinstance(name, str) and len(name) <= ENDPOINT_NAME_MAX_LENGTH
            and ENDPOINT_NAME_RE.fullmatch(name) is not None
            and "--" not in name and any(c.isalpha() for c in name))


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def _is_path(value: object) -> bool:
    return (isinstance(value, str) and len(value) <= PATH_MAX_LENGTH and bool(PATH_RE.fullmatch(value))
            and not DOT_SEGMENT_RE.search(value))


def as_utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


def parse_time(value: object) -> dt.datetime:
    """RFC 3339 (as the API server returns date-time fields) to an aware datetime."""
    if isinstance(value, dt.datetime):
        return as_utc(value)
    if not isinstance(value, str) or "T" not in value.upper():
        raise ValueError(f"{value!r} is not an RFC 3339 date-time")
    return as_utc(dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00")))


def validate_run(run: Mapping, reserved: Iterable[str] = RESERVED_NAMES) -> list[str]:
    """Human problems with a ToolRun (empty when valid); the handler reports them as Invalid.
    `reserved` are the friendly names no run may take (the policy's)."""
    problems = []
    name, spec = name_of(run), spec_of(run)
    if not is_run_name(name):
        problems.append(f"run name {name!r} must be a DNS-1035 label")
    if not is_dns_label(namespace_of(run)):
        problems.append("run namespace must be a DNS-1123 label")
    if not is_valid_principal(spec.get("owner")):
        problems.append("spec.owner must be a valid principal")
    if not isinstance(spec.get("image"), str) or not spec.get("image"):
        problems.append("spec.image is required")
    friendly = spec.get("friendlyName")
    if friendly is not None and not is_dns_label(friendly):
        problems.append("spec.friendlyName must be a DNS-1123 label")
    elif friendly in set(reserved):
        problems.append(f"spec.friendlyName {friendly!r} is reserved: its host belongs to Toolshare itself "
                        f"(reserved: {', '.join(sorted(set(reserved)))})")
    names, ports, http_paths = [], [], []
    for i, ep in enumerate(as_list(spec.get("endpoints"))):
        where = f"spec.endpoints[{i}]"
        ep = ep if isinstance(ep, Mapping) else {}
        names.append(ep.get("name"))
        ports.append(ep.get("port"))
        if not is_endpoint_name(ep.get("name")):
            problems.append(f"{where}.name must be a port name (DNS-1123 label, at most 15 chars)")
        if not _is_port(ep.get("port")):
            problems.append(f"{where}.port must be between 1 and 65535")
        if ep.get("protocol") not in PROTOCOLS:
            problems.append(f"{where}.protocol must be http, https or ssh")
        if ep.get("port") == SSH_PORT and ep.get("protocol") != "ssh":
            problems.append(f"{where}: port 22 is reserved for ssh endpoints")
        if ep.get("path") is not None and not _is_path(ep.get("path")):
            problems.append(f"{where}.path must be a canonical URL path such as / or /lab, "
                            "without . or .. segments")
        if ep.get("protocol") in HTTP_PROTOCOLS:
            http_paths.append(ep.get("path") or "/")
    for what, values in (("names", names), ("ports", ports), ("HTTP paths", http_paths)):
        if len(set(map(repr, values))) != len(values):
            problems.append(f"endpoint {what} must be unique")
    return problems


def _endpoints(run: Mapping, protocols: tuple[str, ...]) -> list[Endpoint]:
    # (name, port, protocol, path) of each entry, with the types of name and port: 1, 1.0 and True
    # are equal as keys but not as ports. One render asks this ten times of the same spec.
    key = tuple((type(name), name, type(port), port, ep.get("protocol"), ep.get("path"))
                for ep in as_list(get(run, "spec", "endpoints")) if isinstance(ep, Mapping)
                for name, port in ((ep.get("name"), ep.get("port")),))
    try:
        return list(_decided_endpoints(key, protocols))
    except TypeError:  # an unhashable value (a malformed spec): decide without the memo
        return list(_decide_endpoints(key, protocols))


@functools.lru_cache(maxsize=1024)
def _decided_endpoints(key: tuple, protocols: tuple[str, ...]) -> tuple[Endpoint, ...]:
    return _decide_endpoints(key, protocols)


def _decide_endpoints(raw: tuple, protocols: tuple[str, ...]) -> tuple[Endpoint, ...]:
    names = [name for _, name, _, _, _, _ in raw]
    ports = [port for _, _, _, port, _, _ in raw]
    # Ports of anything that is not plainly HTTP; an HTTP endpoint on one of them would expose it.
    closed = {SSH_PORT} | {port for _, _, _, port, protocol, _ in raw
                           if protocol not in HTTP_PROTOCOLS and _is_port(port)}
    found = []
    for _, name, _, port, protocol, path in raw:
        if protocol not in protocols or not is_endpoint_name(name) or not _is_port(port):
            continue
        if names.count(name) != 1 or ports.count(port) != 1:
            continue  # ambiguous: refuse rather than guess
        if protocol in HTTP_PROTOCOLS:
            if port in closed or (path is not None and not _is_path(path)):
                continue
        found.append(Endpoint(name, port, protocol, path or "/"))
    if protocols != ("ssh",):
        # Two HTTP endpoints on one host and path cannot both be served; expose neither.
        paths = [ep.path for ep in found]
        found = [ep for ep in found if paths.count(ep.path) == 1]
    return tuple(found)


def http_endpoints(run: Mapping) -> list[Endpoint]:
    """The run's shareable endpoints, in spec order: valid http/https, never port 22 or an SSH port."""
    return _endpoints(run, HTTP_PROTOCOLS)


def ssh_endpoints(run: Mapping) -> list[Endpoint]:
    return _endpoints(run, ("ssh",))


# --- names ---------------------------------------------------------------------------------


def _bounded_label(text: str) -> str:
    """A DNS-1123 label for text: itself when it already is one, else cleaned, cut and hashed."""
    if is_dns_label(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    clean = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    clean = clean[: DNS_LABEL_MAX_LENGTH - len(digest) - 1].rstrip("-")
    return f"{clean}-{digest}" if clean else digest


def host_for(run: Mapping, settings: Settings) -> str:
    """friendlyName.baseDomain, else <run>-<namespace>.baseDomain (hashed when over 63 chars).

    Derived hosts of different runs can coincide (run a-b in c, run a in b-c); the handler's
    host index refuses the later run, as for friendly names.
    """
    friendly = get(run, "spec", "friendlyName")
    label = friendly if is_dns_label(friendly) else _bounded_label(f"{name_of(run)}-{namespace_of(run)}")
    return f"{label}.{settings.base_domain}"


def service_name(run_name: str) -> str:
    return run_name


def ingress_name(run_name: str, endpoint: str) -> str:
    # A dot cannot occur in run or endpoint names, so distinct (run, endpoint) pairs never share
    # an Ingress name ("<run>-<endpoint>" would: a-b + c and a + b-c). At most 63+1+15 chars.
    return f"{run_name}.{endpoint}"


def route_name(run_name: str, endpoint: str) -> str:
    """An endpoint's HTTPRoute (and its Envoy Gateway SecurityPolicy): named as its Ingress would be."""
    return ingress_name(run_name, endpoint)


def middleware_name(namespace: str, run_name: str, endpoint: str) -> str:
    """An endpoint's Traefik forwardAuth Middleware.

    Traefik v3.6 files a Middleware under "<namespace>-<name>" with every run of characters other
    than letters and digits made one "-" (provider.Normalize), but looks up an HTTPRoute's
    ExtensionRef as "<namespace>-<name>" unchanged: a name with a dot or "--" is never found.
    So the name is lower-case letters and digits in "-"-separated runs; "<run>-<endpoint>" alone
    would collide (a-b + c, a + b-c), hence the digest of the exact namespace, run and endpoint,
    which also keeps it apart from the Middlewares of other namespaces in Traefik's flat naming.
    A DNS-1123 label: the readable part is cut to fit 63 characters with the digest.
    """
    digest = hashlib.sha256(f"{namespace}/{run_name}/{endpoint}".encode()).hexdigest()[:10]
    readable = re.sub(r"-+", "-", f"{run_name}-{endpoint}")[: DNS_LABEL_MAX_LENGTH - len(digest) - 1].rstrip("-")
    return f"{readable}-{digest}"


def tls_secret_name(run_name: str, settings: Settings) -> str:
    return settings.tls_secret or f"{run_name}-tls"


def labels_for(run_name: str, endpoint: str | None = None) -> dict[str, str]:
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_RUN: run_name}
    if endpoint is not None:
        labels[LABEL_ENDPOINT] = endpoint
    return labels


# --- shares --------------------------------------------------------------------------------


def _selector_problem(selector: Any) -> str | None:
    if not isinstance(selector, Mapping):
        return "spec.runSelector must be a label selector"
    labels = selector.get("matchLabels") or {}
    exprs = selector.get("matchExpressions") or []
    if not isinstance(labels, Mapping) or not isinstance(exprs, list):
        return "spec.runSelector must be a label selector"
    if not labels and not exprs:
        return "spec.runSelector must not be empty (an empty selector would share every run)"
    for key, value in labels.items():
        if not _is_label_key(key) or not isinstance(value, str) or not _LABEL_VALUE_RE.fullmatch(value):
            return f"spec.runSelector.matchLabels has an invalid label {key!r}"
    for expr in exprs:
        expr = expr if isinstance(expr, Mapping) else {}
        op, values = expr.get("operator"), expr.get("values") or []
        if not _is_label_key(expr.get("key")) or op not in SELECTOR_OPERATORS:
            return "spec.runSelector.matchExpressions needs a valid key and operator"
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return "spec.runSelector.matchExpressions values must be strings"
        if (op in ("In", "NotIn")) != bool(values):
            return f"spec.runSelector: operator {op} {'needs' if op in ('In', 'NotIn') else 'takes no'} values"
    return None


def _is_label_key(key: object) -> bool:
    return isinstance(key, str) and len(key) <= 317 and _LABEL_KEY_RE.fullmatch(key) is not None


def share_problem(share: Mapping) -> str | None:
    """What makes a share Invalid on its own (None when fine); independent of any run."""
    spec = get(share, "spec")
    if not isinstance(spec, Mapping):
        return "spec is missing"
    has_ref, has_selector = spec.get("runRef") is not None, spec.get("runSelector") is not None
    if has_ref == has_selector:
        return "exactly one of spec.runRef and spec.runSelector must be set"
    if has_ref and not is_run_name(get(spec, "runRef", "name")):
        return "spec.runRef.name must name a ToolRun"
    if has_selector and (problem := _selector_problem(spec["runSelector"])):
        return problem
    principals = []
    for field in ("users", "groups"):
        value = spec.get(field)
        if value is not None and not isinstance(value, list):
            return f"spec.{field} must be a list"
        principals += value or []
    if not principals:
        return "a share needs at least one user or group"
    if len(principals) > MAX_PRINCIPALS:
        return f"a share lists at most {MAX_PRINCIPALS} users and groups together"
    if not all(is_valid_principal(p) for p in principals):
        return "a user or group name does not match the principal grammar"
    endpoints = spec.get("endpoints")
    if endpoints is not None and (
            not isinstance(endpoints, list) or not all(is_endpoint_name(e) for e in endpoints)):
        return "spec.endpoints must list endpoint names"
    if spec.get("expiresAt") is not None:
        try:
            parse_time(spec["expiresAt"])
        except ValueError:
            return "spec.expiresAt must be an RFC 3339 date-time"
    return None


def _selector_matches(selector: Mapping, labels: Mapping) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def share_applies_to(share: Mapping, run: Mapping) -> bool:
    """Whether the share targets the run (same namespace; runRef name or runSelector labels).

    Ignores validity and expiry: see share_state. A malformed target applies to nothing.
    """
    if namespace_of(share) != namespace_of(run):
        return False
    spec = spec_of(share)
    ref, selector = spec.get("runRef"), spec.get("runSelector")
    if (ref is None) == (selector is None):
        return False
    if ref is not None:
        return is_run_name(get(ref, "name")) and get(ref, "name") == name_of(run)
    if _selector_problem(selector):
        return False
    labels = get(run, "metadata", "labels") or {}
    return _selector_matches(selector, labels if isinstance(labels, Mapping) else {})


def expires_at(share: Mapping) -> dt.datetime | None:
    value = get(share, "spec", "expiresAt")
    return None if value is None else parse_time(value)


def host_claims(runs: Iterable[Mapping], settings: Settings) -> dict[str, Mapping]:
    """Which run holds each host: the oldest (then by namespace/name), so a later run never takes over."""
    claims: dict[str, Mapping] = {}
    for run in sorted(runs, key=lambda r: (r["metadata"].get("creationTimestamp") or "",
                                           r["metadata"]["namespace"], r["metadata"]["name"])):
        if validate_run(run):
            continue
        claims.setdefault(host_for(run, settings), run)
    return claims
