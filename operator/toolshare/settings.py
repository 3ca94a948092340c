"""The operator's configuration: one frozen object, built once from the environment.

Every value here can reach a rendered object (hosts, Ingress annotations, NetworkPolicy rules), so
each is validated up front: a bad setting stops the operator at startup with a message naming the
environment variable, instead of producing broken or unsafe children later.
"""

from __future__ import annotations

import dataclasses
import os
import re
import urllib.parse
from collections.abc import Mapping
from typing import NamedTuple

from toolshare.grant import load_public
from toolshare.principals import is_dns_label

# DNS subdomain (RFC 1123): dot-separated labels, at most 253 characters.
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Annotation values are pasted into nginx configuration: no whitespace, quotes, ';', '{', '}' or
# backslashes. The gate URL additionally gets no nginx variables, query or fragment.
_GATE_URL_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$")
_SIGNIN_URL_RE = re.compile(r"^https?://[A-Za-z0-9._~:/?#\[\]@!$&()*+,=%-]+$")
# Equality-based label selector, "key=value[,key=value...]".
_LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# An image reference as a Pod takes it: [registry[:port]/]path[:tag][@digest].
_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._:/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$")

# Hosts are "<label>.<base_domain>"; keep room for a 63-character label and the dot.
BASE_DOMAIN_MAX_LENGTH = 253 - 64

# TOOLSHARE_ROUTING: what routes a run's HTTP endpoints (docs/routing.md).
INGRESS, GATEWAY = "ingress", "gateway"
ROUTING_BACKENDS = (INGRESS, GATEWAY)
# TOOLSHARE_GATEWAY_AUTH: how an HTTPRoute calls the gate, in the form the Gateway implementation reads.
EXTERNAL_AUTH, TRAEFIK, ENVOY_GATEWAY = "external-auth", "traefik", "envoy-gateway"
GATEWAY_AUTH_FLAVOURS = (EXTERNAL_AUTH, TRAEFIK, ENVOY_GATEWAY)
# The flavours whose auth filter references the gate's Service (a backendRef), not a URL.
GATEWAY_AUTH_BY_SERVICE = (EXTERNAL_AUTH, ENVOY_GATEWAY)
# A Service's cluster DNS name: <service>.<namespace>.svc[.cluster.local]. Service names are
# DNS-1035 labels, namespaces DNS-1123 labels.
_SERVICE_HOST_RE = re.compile(
    r"^(?P<name>[a-z]([-a-z0-9]{0,61}[a-z0-9])?)\.(?P<namespace>[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)"
    r"\.svc(\.cluster\.local)?$")


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


def _env(name: str) -> dict[str, str]:
    return {"env": name}


@dataclasses.dataclass(frozen=True)
class Settings:
    # Hosts are "<friendlyName>.<base_domain>" or "<run>-<namespace>.<base_domain>".
    base_domain: str = dataclasses.field(
        default="toolshare.localhost", metadata=_env("TOOLSHARE_BASE_DOMAIN"))
    # spec.ingressClassName of every rendered Ingress.
    ingress_class: str = dataclasses.field(
        default="nginx", metadata=_env("TOOLSHARE_INGRESS_CLASS"))
    # Toolshare's access gate; Ingresses call f"{gate_url}/check/<namespace>/<run>/<endpoint>".
    gate_url: str = dataclasses.field(
        default="http://toolshare-gate.toolshare-system.svc.cluster.local:8080",
        metadata=_env("TOOLSHARE_GATE_URL"))
    # oauth2-proxy sign-in page (nginx auth-signin); may use nginx variables such as $host.
    # Empty means the default "https://auth.<base_domain>/oauth2/start?rd=...".
    signin_url: str = dataclasses.field(default="", metadata=_env("TOOLSHARE_SIGNIN_URL"))
    # Namespace of the ingress controller: the only source allowed to reach HTTP ports.
    ingress_namespace: str = dataclasses.field(
        default="ingress-nginx", metadata=_env("TOOLSHARE_INGRESS_NAMESPACE"))
    # Secret holding the TLS certificate for every run host (e.g. a wildcard); "" = none.
    tls_secret: str = dataclasses.field(default="", metadata=_env("TOOLSHARE_TLS_SECRET"))
    # cert-manager ClusterIssuer, set as the cert-manager.io/cluster-issuer annotation; "" = none.
    tls_cluster_issuer: str = dataclasses.field(
        default="", metadata=_env("TOOLSHARE_TLS_CLUSTER_ISSUER"))
    # Label selector ("key=value,...") for pods in the run's namespace allowed to reach SSH
    # endpoints. "" = SSH reachable from nowhere. Sharing never changes this.
    owner_access_selector: str = dataclasses.field(default="", metadata=_env("TOOLSHARE_SSH_FROM"))
    # Server-side apply field manager for every write the operator makes.
    field_manager: str = dataclasses.field(
        default="toolshare", metadata=_env("TOOLSHARE_FIELD_MANAGER"))
    # What routes the HTTP endpoints: "ingress" (an ingress-nginx-dialect Ingress each) or
    # "gateway" (a Gateway API HTTPRoute each, attached to `gateway`).
    routing: str = dataclasses.field(default=INGRESS, metadata=_env("TOOLSHARE_ROUTING"))
    # "<namespace>/<name>" of the Gateway every HTTPRoute attaches to; required for "gateway".
    gateway: str = dataclasses.field(default="", metadata=_env("TOOLSHARE_GATEWAY"))
    # The Gateway listener the routes attach to (parentRef sectionName); "" = every listener.
    gateway_section: str = dataclasses.field(default="", metadata=_env("TOOLSHARE_GATEWAY_SECTION"))
    # How an HTTPRoute calls the gate: "external-auth" (the Gateway API ExternalAuth filter,
    # experimental channel), "traefik" (a Traefik forwardAuth Middleware per endpoint) or
    # "envoy-gateway" (an Envoy Gateway SecurityPolicy per route).
    gateway_auth: str = dataclasses.field(default=EXTERNAL_AUTH, metadata=_env("TOOLSHARE_GATEWAY_AUTH"))
    # The Toolshare image, run as each run's guard (guard/app.py) in front of its HTTP endpoints;
    # "" = no guard: a revocation then reaches new requests only, not open connections.
    guard_image: str = dataclasses.field(default="", metadata=_env("TOOLSHARE_GUARD_IMAGE"))
    # The gate's Ed25519 public key (grant.public_text), which the guards check grants with.
    grant_public_key: str = dataclasses.field(default="", metadata=_env("TOOLSHARE_GRANT_PUBLIC_KEY"))

    def __post_init__(self) -> None:
        if not self.signin_url:
            object.__setattr__(self, "signin_url", default_signin_url(self.base_domain))
        problems = [p for f in dataclasses.fields(self) if (p := self._check(f.name))]
        if not problems:
            problems = self._check_together()
        if problems:
            raise SettingsError("invalid Toolshare settings:\n  " + "\n  ".join(problems))

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """Read TOOLSHARE_* variables; unset or empty variables take the documented default."""
        kwargs = {}
        for f in dataclasses.fields(cls):
            value = env.get(f.metadata["env"], "").strip()
            if value:
                kwargs[f.name] = value
        return cls(**kwargs)

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_secret or self.tls_cluster_issuer)

    @property
    def url_scheme(self) -> str:
        return "https" if self.tls_enabled else "http"

    @property
    def owner_access_labels(self) -> dict[str, str]:
        """TOOLSHARE_SSH_FROM as matchLabels; empty when SSH is reachable from nowhere."""
        return _parse_selector(self.owner_access_selector)

    @property
    def guarded(self) -> bool:
        """Whether every run gets a guard (and the router passes the gate's grant on to it)."""
        return bool(self.guard_image)

    @property
    def gateway_routing(self) -> bool:
        return self.routing == GATEWAY

    @property
    def gateway_ref(self) -> tuple[str, str]:
        """TOOLSHARE_GATEWAY as (namespace, name); ("", "") when unset."""
        namespace, _, name = self.gateway.partition("/")
        return namespace, name

    @property
    def gate_service(self) -> GateService | None:
        """The gate's Service as TOOLSHARE_GATE_URL names it, or None when its host is not a
        Service's cluster DNS name (an address, an external name)."""
        return gate_service(self.gate_url)

    def _check(self, name: str) -> str | None:
        value = getattr(self, name)
        var = next(f.metadata["env"] for f in dataclasses.fields(self) if f.name == name)
        where = f"{name} ({var}={value!r})"
        if not isinstance(value, str):
            return f"{where}: must be a string"
        if name == "base_domain":
            if not _is_subdomain(value) or len(value) > BASE_DOMAIN_MAX_LENGTH:
                return (f"{where}: must be a lower-case DNS name of at most "
                        f"{BASE_DOMAIN_MAX_LENGTH} characters")
        elif name in ("ingress_class", "tls_cluster_issuer", "tls_secret"):
            if value and not _is_subdomain(value):
                return f"{where}: must be a Kubernetes object name (DNS subdomain)"
        elif name == "ingress_namespace":
            if not is_dns_label(value):
                return f"{where}: must be a namespace name (DNS-1123 label)"
        elif name == "gate_url":
            if not _GATE_URL_RE.fullmatch(value) or value.endswith("/"):
                return (f"{where}: must be an http(s) URL without query, fragment, "
                        "trailing slash or special characters")
        elif name == "signin_url":
            if not _SIGNIN_URL_RE.fullmatch(value):
                return (f"{where}: must be an http(s) URL without whitespace, quotes, "
                        "';', '{', '}' or backslashes")
        elif name == "owner_access_selector":
            try:
                _parse_selector(value)
            except ValueError as e:
                return f"{where}: {e}"
        elif name == "field_manager":
            if not re.fullmatch(r"[A-Za-z0-9][-A-Za-z0-9_.]{0,127}", value):
                return f"{where}: must be a short name of letters, digits, '-', '_' and '.'"
        elif name == "routing":
            if value not in ROUTING_BACKENDS:
                return f"{where}: must be one of {', '.join(ROUTING_BACKENDS)}"
        elif name == "gateway":
            if not value:
                if self.routing == GATEWAY:
                    return (f"{where}: is required with TOOLSHARE_ROUTING={GATEWAY}: the Gateway every "
                            "HTTPRoute attaches to, as <namespace>/<name>")
            else:
                namespace, sep, gw = value.partition("/")
                if not sep or not is_dns_label(namespace) or not _is_subdomain(gw):
                    return (f"{where}: must be <namespace>/<name> of a Gateway (a DNS-1123 label, "
                            "'/', a DNS subdomain)")
        elif name == "gateway_section":
            if value and not _is_subdomain(value):
                return f"{where}: must be a listener name (DNS subdomain) or empty"
        elif name == "gateway_auth":
            if value not in GATEWAY_AUTH_FLAVOURS:
                return f"{where}: must be one of {', '.join(GATEWAY_AUTH_FLAVOURS)}"
        elif name == "guard_image":
            if value and (len(value) > 512 or not _IMAGE_RE.fullmatch(value)):
                return f"{where}: must be an image reference ([registry/]path[:tag][@sha256:digest])"
        elif name == "grant_public_key":
            if value:
                try:
                    load_public(value)
                except ValueError as e:
                    return f"{name} (TOOLSHARE_GRANT_PUBLIC_KEY): {e}"
        return None

    def _check_together(self) -> list[str]:
        """Rules between fields, checked once each field is well-formed."""
        problems = []
        if (self.routing == GATEWAY and self.gateway_auth in GATEWAY_AUTH_BY_SERVICE
                and self.gate_service is None):
            problems.append(
                f"gate_url (TOOLSHARE_GATE_URL={self.gate_url!r}): with TOOLSHARE_ROUTING={GATEWAY} and "
                f"TOOLSHARE_GATEWAY_AUTH={self.gateway_auth} the route's auth refers to the gate's "
                "Service, not a URL: the host must be the Service's cluster DNS name, "
                "<service>.<namespace>.svc or <service>.<namespace>.svc.cluster.local "
                f"(or use TOOLSHARE_GATEWAY_AUTH={TRAEFIK}, which calls the URL)")
        if bool(self.guard_image) != bool(self.grant_public_key):
            problems.append("guard_image (TOOLSHARE_GUARD_IMAGE) and grant_public_key (TOOLSHARE_GRANT_PUBLIC_KEY) "
                            "go together: a guard checks every request's grant with the gate's public key")
        return problems


class GateService(NamedTuple):
    """The gate's Service, for a Gateway API backendRef: port is the Service port, path what the
    gate URL puts before /check ("" or "/prefix")."""

    name: str
    namespace: str
    port: int
    path: str


def gate_service(gate_url: str) -> GateService | None:
    """The Service a gate URL names (http(s)://<service>.<namespace>.svc[.cluster.local][:port][/path]),
    or None when it names none. The port is the URL's, else the scheme's (80, 443)."""
    try:
        url = urllib.parse.urlsplit(gate_url)
        port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    except ValueError:  # a port out of range
        return None
    host = url.netloc.rpartition(":")[0] if url.port else url.netloc  # as written (hostname lower-cases)
    match = _SERVICE_HOST_RE.fullmatch(host)
    if match is None or port is None:
        return None
    return GateService(match["name"], match["namespace"], port, url.path.rstrip("/"))


def default_signin_url(base_domain: str) -> str:
    return f"https://auth.{base_domain}/oauth2/start?rd=$scheme://$host$escaped_request_uri"


def _is_subdomain(value: str) -> bool:
    return len(value) <= 253 and _SUBDOMAIN_RE.fullmatch(value) is not None


def _parse_selector(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for term in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = term.replace("==", "=").partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _is_label_key(key) or not _is_label_value(value):
            raise ValueError(
                f"{term!r} is not key=value with a valid label key and value "
                "(only equality selectors are supported)")
        if labels.get(key, value) != value:
            raise ValueError(f"label {key!r} is given twice with different values")
        labels[key] = value
    return labels


def _is_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and not _is_subdomain(prefix):
        return False
    return len(name) <= 63 and _LABEL_NAME_RE.fullmatch(name) is not None


def _is_label_value(value: str) -> bool:
    return len(value) <= 63 and _LABEL_VALUE_RE.fullmatch(value) is not None
