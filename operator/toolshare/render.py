"""Pure rendering: a ToolRun and its RunShares in, desired children out.

No I/O, no kopf, no Kubernetes client: the handlers fetch, call these functions, and apply the
returned dicts with server-side apply (adding ownerReferences themselves). Everything here is
deterministic for the same input, so an unchanged run renders byte-identical children and an idle
reconcile has nothing to write.

Two invariants hold whatever the input (the CRD schema enforces them too; this is the second
line of defence, proven by property tests):
- SSH is never exposed through sharing: no Service port, Ingress, annotation or NetworkPolicy
  rule from the ingress namespace reaches an ``ssh`` endpoint or port 22.
- Only operator-controlled text, validated DNS names and grammar-checked principals reach an
  annotation; a share carrying anything else is Invalid and applies nowhere.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from toolshare.policy import Policy
from toolshare.principals import DNS_LABEL_MAX_LENGTH, is_dns_label, is_valid_principal
from toolshare.settings import Settings
from toolshare.sharing import sharer_problem

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "toolshare"
LABEL_RUN = "toolshare.dev/run"
LABEL_ENDPOINT = "toolshare.dev/endpoint"
ANN_OWNER = "toolshare.dev/owner"
ANN_USERS = "toolshare.dev/allowed-users"
ANN_GROUPS = "toolshare.dev/allowed-groups"
NGINX = "nginx.ingress.kubernetes.io/"
ANN_CLUSTER_ISSUER = "cert-manager.io/cluster-issuer"
AUTH_RESPONSE_HEADERS = "X-Auth-Request-User,X-Auth-Request-Email,X-Auth-Request-Groups"

SSH_PORT = 22
HTTP_PROTOCOLS = ("http", "https")
PROTOCOLS = ("http", "https", "ssh")
MAX_PRINCIPALS = 256
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
_LABEL_KEY_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
# Last line of defence for annotation values: nothing nginx could read as configuration.
_UNSAFE_ANNOTATION_RE = re.compile(r"[\s\"'`\\;{}<>|^]|[^\x21-\x7e]")


class RenderError(ValueError):
    """The run cannot be rendered safely (its identity or owner is invalid)."""


class Endpoint(NamedTuple):
    name: str
    port: int
    protocol: str
    path: str


class Access(NamedTuple):
    """Who, besides the owner, may use one endpoint (sorted)."""

    users: tuple[str, ...]
    groups: tuple[str, ...]


class ShareState(NamedTuple):
    reason: str  # Active | RunNotFound | Expired | Invalid
    message: str
    runs: tuple[str, ...]  # sorted names of the runs the share grants access to


# --- reading the API objects -------------------------------------------------------------


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else []


def _name(obj: Any) -> str:
    return _get(obj, "metadata", "name") or ""


def _namespace(obj: Any) -> str:
    return _get(obj, "metadata", "namespace") or ""


def _spec(obj: Any) -> Mapping:
    spec = _get(obj, "spec")
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
    return isinstance(value, str) and len(value) <= PATH_MAX_LENGTH and bool(PATH_RE.fullmatch(value))


def _as_utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


def parse_time(value: object) -> dt.datetime:
    """RFC 3339 (as the API server returns date-time fields) to an aware datetime."""
    if isinstance(value, dt.datetime):
        return _as_utc(value)
    if not isinstance(value, str) or "T" not in value.upper():
        raise ValueError(f"{value!r} is not an RFC 3339 date-time")
    return _as_utc(dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00")))


def validate_run(run: Mapping) -> list[str]:
    """Human problems with a ToolRun (empty when valid); the handler reports them as Invalid."""
    problems = []
    name, spec = _name(run), _spec(run)
    if not is_run_name(name):
        problems.append(f"run name {name!r} must be a DNS-1035 label")
    if not is_dns_label(_namespace(run)):
        problems.append("run namespace must be a DNS-1123 label")
    if not is_valid_principal(spec.get("owner")):
        problems.append("spec.owner must be a valid principal")
    if not isinstance(spec.get("image"), str) or not spec.get("image"):
        problems.append("spec.image is required")
    friendly = spec.get("friendlyName")
    if friendly is not None and not is_dns_label(friendly):
        problems.append("spec.friendlyName must be a DNS-1123 label")
    names, ports, http_paths = [], [], []
    for i, ep in enumerate(_list(spec.get("endpoints"))):
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
            problems.append(f"{where}.path must be a canonical URL path such as / or /lab")
        if ep.get("protocol") in HTTP_PROTOCOLS:
            http_paths.append(ep.get("path") or "/")
    for what, values in (("names", names), ("ports", ports), ("HTTP paths", http_paths)):
        if len(set(map(repr, values))) != len(values):
            problems.append(f"endpoint {what} must be unique")
    return problems


def _endpoints(run: Mapping, protocols: tuple[str, ...]) -> list[Endpoint]:
    raw = [ep for ep in _list(_get(run, "spec", "endpoints")) if isinstance(ep, Mapping)]
    names = [ep.get("name") for ep in raw]
    ports = [ep.get("port") for ep in raw]
    # Ports of anything that is not plainly HTTP; an HTTP endpoint on one of them would expose it.
    closed = {SSH_PORT} | {p for ep in raw if ep.get("protocol") not in HTTP_PROTOCOLS
                           and _is_port(p := ep.get("port"))}
    found = []
    for ep in raw:
        name, port, protocol, path = ep.get("name"), ep.get("port"), ep.get("protocol"), ep.get("path")
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
    return found


def http_endpoints(run: Mapping) -> list[Endpoint]:
    """The run's shareable endpoints, in spec order: valid http/https, never port 22 or an SSH port."""
    return _endpoints(run, HTTP_PROTOCOLS)


def ssh_endpoints(run: Mapping) -> list[Endpoint]:
    return _endpoints(run, ("ssh",))


def _identity(run: Mapping) -> tuple[str, str, str]:
    name, namespace, owner = _name(run), _namespace(run), _get(run, "spec", "owner")
    if not is_run_name(name) or not is_dns_label(namespace) or not is_valid_principal(owner):
        raise RenderError(f"run {name!r} in {namespace!r}: invalid name, namespace or owner")
    return name, namespace, owner


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
    friendly = _get(run, "spec", "friendlyName")
    label = friendly if is_dns_label(friendly) else _bounded_label(f"{_name(run)}-{_namespace(run)}")
    return f"{label}.{settings.base_domain}"


def service_name(run_name: str) -> str:
    return run_name


def ingress_name(run_name: str, endpoint: str) -> str:
    # A dot cannot occur in run or endpoint names, so distinct (run, endpoint) pairs never share
    # an Ingress name ("<run>-<endpoint>" would: a-b + c and a + b-c). At most 63+1+15 chars.
    return f"{run_name}.{endpoint}"


def tls_secret_name(run_name: str, settings: Settings) -> str:
    return settings.tls_secret or f"{run_name}-tls"


def labels_for(run_name: str, endpoint: str | None = None) -> dict[str, str]:
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_RUN: run_name}
    if endpoint is not None:
        labels[LABEL_ENDPOINT] = endpoint
    return labels


def _metadata(run: Mapping, name: str, endpoint: str | None = None) -> dict:
    return {"name": name, "namespace": _namespace(run), "labels": labels_for(_name(run), endpoint)}


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
    spec = _get(share, "spec")
    if not isinstance(spec, Mapping):
        return "spec is missing"
    has_ref, has_selector = spec.get("runRef") is not None, spec.get("runSelector") is not None
    if has_ref == has_selector:
        return "exactly one of spec.runRef and spec.runSelector must be set"
    if has_ref and not is_run_name(_get(spec, "runRef", "name")):
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
    if _namespace(share) != _namespace(run):
        return False
    spec = _spec(share)
    ref, selector = spec.get("runRef"), spec.get("runSelector")
    if (ref is None) == (selector is None):
        return False
    if ref is not None:
        return is_run_name(_get(ref, "name")) and _get(ref, "name") == _name(run)
    if _selector_problem(selector):
        return False
    labels = _get(run, "metadata", "labels") or {}
    return _selector_matches(selector, labels if isinstance(labels, Mapping) else {})


def _expires_at(share: Mapping) -> dt.datetime | None:
    value = _get(share, "spec", "expiresAt")
    return None if value is None else parse_time(value)


def share_state(share: Mapping, runs_by_name: Mapping[str, Mapping], now: dt.datetime,
                policy: Policy | None = None) -> ShareState:
    """The share's verdict against the runs of its namespace: (reason, message, runs).

    With a policy (the operator always passes one), the share's recorded sharer must still be
    allowed to share every run it matches (defence in depth behind the admission webhook).
    """
    now = _as_utc(now)
    if problem := share_problem(share):
        return ShareState(INVALID, problem, ())
    expires = _expires_at(share)
    if expires is not None and expires <= now:
        return ShareState(EXPIRED, f"expired at {expires.isoformat()}", ())
    matched = sorted((r for r in runs_by_name.values() if share_applies_to(share, r)), key=_name)
    if policy is not None and (problem := sharer_problem(
            share, [(_name(r), _get(r, "spec", "owner")) for r in matched], policy)):
        return ShareState(INVALID, problem, ())
    if not matched:
        ref = _get(share, "spec", "runRef", "name")
        message = f"ToolRun {ref!r} not found" if ref else "no ToolRun matches spec.runSelector"
        return ShareState(RUN_NOT_FOUND, message, ())
    for endpoint in _get(share, "spec", "endpoints") or []:
        shareable = [r for r in matched if endpoint in {e.name for e in http_endpoints(r)}]
        for run in matched:
            declared = {ep.get("name") for ep in _list(_get(run, "spec", "endpoints"))
                        if isinstance(ep, Mapping) and isinstance(ep.get("name"), str)}
            if endpoint in declared and run not in shareable:
                return ShareState(INVALID, f"endpoint {endpoint!r} of ToolRun {_name(run)!r} is "
                                  "not a shareable HTTP endpoint (SSH is never shared)", ())
        if not shareable:
            return ShareState(INVALID, f"no matched ToolRun has an endpoint {endpoint!r}", ())
    names = tuple(_name(r) for r in matched)
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    return ShareState(ACTIVE, f"shared on {shown}", names)


def access_for(run: Mapping, shares: Iterable[Mapping], now: dt.datetime,
               runs_by_name: Mapping[str, Mapping] | None = None,
               policy: Policy | None = None) -> dict[str, Access]:
    """{endpoint: Access} over the run's HTTP endpoints: the union of its active shares.

    The owner is not listed (see is_allowed). Pass runs_by_name (the namespace's runs) so a
    share's verdict here matches its status; by default only this run is considered.
    """
    runs = {**(runs_by_name or {}), _name(run): run}
    endpoints = http_endpoints(run)
    users: dict[str, set[str]] = {ep.name: set() for ep in endpoints}
    groups: dict[str, set[str]] = {ep.name: set() for ep in endpoints}
    for share in shares:
        if not share_applies_to(share, run):
            continue
        state = share_state(share, runs, now, policy)
        if state.reason != ACTIVE or _name(run) not in state.runs:
            continue
        spec = share["spec"]
        wanted = spec.get("endpoints") or [ep.name for ep in endpoints]
        for name in wanted:
            if name in users:
                users[name].update(p for p in spec.get("users") or [] if is_valid_principal(p))
                groups[name].update(p for p in spec.get("groups") or [] if is_valid_principal(p))
    return {ep.name: Access(tuple(sorted(users[ep.name])), tuple(sorted(groups[ep.name])))
            for ep in endpoints}


def is_allowed(owner: str, access: Access, user: str, user_groups: Iterable[str]) -> bool:
    """Access = owner OR a listed user OR a member of a listed group."""
    return user == owner or user in access.users or not set(user_groups).isdisjoint(access.groups)


def next_expiry(shares: Iterable[Mapping], now: dt.datetime) -> dt.datetime | None:
    """When the earliest still-valid, not-yet-expired share expires (time to reconcile again)."""
    now = _as_utc(now)
    times = [t for s in shares if share_problem(s) is None
             and (t := _expires_at(s)) is not None and t > now]
    return min(times, default=None)


# --- children ------------------------------------------------------------------------------


def render_pod(run: Mapping) -> dict:
    name, _, _ = _identity(run)
    spec = _spec(run)
    container: dict[str, Any] = {"name": CONTAINER_NAME, "image": spec.get("image")}
    for field in ("command", "args"):
        values = _list(spec.get(field))
        if values and all(isinstance(v, str) for v in values):
            container[field] = values
    env = [{"name": e["name"], "value": e["value"] if isinstance(e.get("value"), str) else ""}
           for e in _list(spec.get("env")) if isinstance(e, Mapping) and isinstance(e.get("name"), str)]
    if env:
        container["env"] = env
    resources = {k: dict(v) for k, v in (_get(spec, "resources") or {}).items()
                 if k in ("requests", "limits") and isinstance(v, Mapping)}
    if resources:
        container["resources"] = resources
    ports = sorted(http_endpoints(run) + ssh_endpoints(run), key=lambda ep: ep.name)
    if ports:
        container["ports"] = [{"name": ep.name, "containerPort": ep.port, "protocol": "TCP"}
                              for ep in ports]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": _metadata(run, name),
        "spec": {
            "containers": [container],
            # A shared tool has no business talking to the Kubernetes API.
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
        },
    }


def render_service(run: Mapping) -> dict | None:
    """ClusterIP Service with the HTTP/HTTPS ports only, by name; None when there are none."""
    name, _, _ = _identity(run)
    endpoints = http_endpoints(run)
    if not endpoints:
        return None
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _metadata(run, service_name(name)),
        "spec": {
            "type": "ClusterIP",
            "selector": labels_for(name),
            "ports": [{"name": ep.name, "port": ep.port, "targetPort": ep.name,
                       "protocol": "TCP", "appProtocol": ep.protocol} for ep in endpoints],
        },
    }


def _annotation(value: str) -> str:
    if _UNSAFE_ANNOTATION_RE.search(value):
        raise RenderError(f"refusing to render unsafe annotation value {value[:64]!r}")
    return value


def _principal_list(principals: Iterable[str]) -> str:
    principals = sorted(principals)
    if not all(is_valid_principal(p) for p in principals):
        raise RenderError("refusing to render a principal outside the grammar")
    return _annotation(",".join(principals))


def render_ingresses(run: Mapping, shares: Iterable[Mapping], settings: Settings,
                     now: dt.datetime, runs_by_name: Mapping[str, Mapping] | None = None,
                     policy: Policy | None = None) -> list[dict]:
    """One Ingress per HTTP endpoint, each with its own access list and the gate's auth-url."""
    name, namespace, owner = _identity(run)
    host = host_for(run, settings)
    access = access_for(run, shares, now, runs_by_name, policy)
    ingresses = []
    for i, ep in enumerate(http_endpoints(run)):
        annotations = {
            # The gate decides from the annotations below; principals never enter auth-url.
            NGINX + "auth-url": _annotation(f"{settings.gate_url}/check/{namespace}/{name}/{ep.name}"),
            NGINX + "auth-signin": _annotation(settings.signin_url),
            NGINX + "auth-response-headers": AUTH_RESPONSE_HEADERS,
            ANN_OWNER: _principal_list([owner]),
            ANN_USERS: _principal_list(access[ep.name].users),
            ANN_GROUPS: _principal_list(access[ep.name].groups),
        }
        if ep.protocol == "https":
            annotations[NGINX + "backend-protocol"] = "HTTPS"
        spec: dict[str, Any] = {
            "ingressClassName": settings.ingress_class,
            "rules": [{"host": host, "http": {"paths": [{
                "path": ep.path, "pathType": "Prefix",
                "backend": {"service": {"name": service_name(name), "port": {"name": ep.name}}},
            }]}}],
        }
        if settings.tls_enabled:
            spec["tls"] = [{"hosts": [host], "secretName": tls_secret_name(name, settings)}]
            # All endpoints share the host: one Ingress asks cert-manager for the certificate.
            if settings.tls_cluster_issuer and not settings.tls_secret and i == 0:
                annotations[ANN_CLUSTER_ISSUER] = settings.tls_cluster_issuer
        metadata = _metadata(run, ingress_name(name, ep.name), ep.name)
        metadata["annotations"] = dict(sorted(annotations.items()))
        ingresses.append({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                          "metadata": metadata, "spec": spec})
    return ingresses


def render_network_policy(run: Mapping, settings: Settings) -> dict:
    """Deny all ingress to the pod except HTTP ports from the ingress controller's namespace
    and SSH ports from the owner-access selector (if configured)."""
    name, _, _ = _identity(run)
    rules = []
    http_ports = [{"port": ep.port, "protocol": "TCP"} for ep in http_endpoints(run)]
    if http_ports:
        rules.append({"from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": settings.ingress_namespace}}}], "ports": http_ports})
    ssh_ports = [{"port": ep.port, "protocol": "TCP"} for ep in ssh_endpoints(run)]
    if ssh_ports and settings.owner_access_labels:
        rules.append({"from": [{"podSelector": {"matchLabels": settings.owner_access_labels}}],
                      "ports": ssh_ports})
    spec: dict[str, Any] = {"podSelector": {"matchLabels": labels_for(name)}, "policyTypes": ["Ingress"]}
    if rules:
        # No rules = deny all. Rendered without the key, as the API server stores it (it drops an
        # empty list); an `"ingress": []` would never compare equal and be re-applied on every reconcile.
        spec["ingress"] = rules
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _metadata(run, name),
        "spec": spec,
    }


def render_children(run: Mapping, shares: Iterable[Mapping], settings: Settings, now: dt.datetime,
                    runs_by_name: Mapping[str, Mapping] | None = None,
                    policy: Policy | None = None) -> list[dict]:
    """Every desired child of the run, in a fixed order: Pod, Service, Ingresses, NetworkPolicy.

    Malformed endpoints are left out (validate_run says why); a malformed identity raises.
    """
    shares = list(shares)
    service = render_service(run)
    return [render_pod(run), *([service] if service else []),
            *render_ingresses(run, shares, settings, now, runs_by_name, policy),
            render_network_policy(run, settings)]


# --- status --------------------------------------------------------------------------------


def run_urls(run: Mapping, settings: Settings) -> list[dict[str, str]]:
    host = host_for(run, settings)
    return [{"endpoint": ep.name, "url": f"{settings.url_scheme}://{host}{ep.path}"}
            for ep in http_endpoints(run)]


def shared_with(access: Mapping[str, Access]) -> dict[str, Any]:
    """status.sharedWith: the union over endpoints, plus a one-line summary for kubectl get."""
    users = sorted({u for a in access.values() for u in a.users})
    groups = sorted({g for a in access.values() for g in a.groups})
    return {"users": users, "groups": groups, "summary": _summary(users + [f"group:{g}" for g in groups])}


def _summary(items: list[str], limit: int = 120) -> str:
    shown: list[str] = []
    for item in items:
        if shown and len(", ".join(shown + [item])) > limit:
            return ", ".join(shown) + f" (+{len(items) - len(shown)} more)"
        shown.append(item)
    return ", ".join(shown)


def run_status(run: Mapping, shares: Iterable[Mapping], settings: Settings, now: dt.datetime,
               runs_by_name: Mapping[str, Mapping] | None = None, policy: Policy | None = None) -> dict:
    """The rendered part of a ToolRun's status: urls and sharedWith (conditions are the handler's)."""
    return {"urls": run_urls(run, settings),
            "sharedWith": shared_with(access_for(run, shares, now, runs_by_name, policy))}


def share_status(state: ShareState) -> dict:
    """The rendered part of a RunShare's status: the runs it applies to."""
    return {"runs": list(state.runs)}

