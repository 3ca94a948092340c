"""ingress-nginx Ingresses: one per HTTP endpoint, with the gate as external auth.

Each Ingress carries its endpoint's access list (access.py) as annotations, and the gate's
/check URL for the endpoint as auth-url; principals never enter a URL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from toolshare import grant
from toolshare.access import access_for
from toolshare.model import host_for, http_endpoints, ingress_name, service_name, tls_secret_name
from toolshare.policy import Policy
from toolshare.render.common import annotation, child_metadata, identity, principal_list
from toolshare.settings import Settings

ANN_OWNER = "toolshare.dev/owner"
ANN_USERS = "toolshare.dev/allowed-users"
ANN_GROUPS = "toolshare.dev/allowed-groups"
NGINX = "nginx.ingress.kubernetes.io/"
ANN_CLUSTER_ISSUER = "cert-manager.io/cluster-issuer"
# Copied from the gate's 202 onto the request to the tool, replacing what the caller sent: the
# identity, Cookie without the sign-in session, and Authorization, which the gate never sets, so
# the tool never receives the caller's bearer token.
AUTH_RESPONSE_HEADERS = "X-Auth-Request-User,X-Auth-Request-Email,X-Auth-Request-Groups,Authorization,Cookie"


def auth_response_headers(settings: Settings) -> tuple[str, ...]:
    """What the router copies from the gate's 202 onto the request to the tool; with a guard also
    the gate's grant, which the guard requires and strips (grant.py)."""
    return (*AUTH_RESPONSE_HEADERS.split(","), *([grant.HEADER] if settings.guarded else []))


def render_ingresses(run: Mapping, shares: Iterable[Mapping], settings: Settings,
                     now: dt.datetime, runs_by_name: Mapping[str, Mapping] | None = None,
                     policy: Policy | None = None) -> list[dict]:
    """One Ingress per HTTP endpoint, each with its own access list and the gate's auth-url."""
    name, namespace, owner = identity(run)
    host = host_for(run, settings)
    access = access_for(run, shares, now, runs_by_name, policy)
    ingresses = []
    for i, ep in enumerate(http_endpoints(run)):
        annotations = {
            # The gate decides from the annotations below; principals never enter auth-url.
            NGINX + "auth-url": annotation(f"{settings.gate_url}/check/{namespace}/{name}/{ep.name}"),
            NGINX + "auth-signin": annotation(settings.signin_url),
            NGINX + "auth-response-headers": ",".join(auth_response_headers(settings)),
            ANN_OWNER: principal_list([owner]),
            ANN_USERS: principal_list(access[ep.name].users),
            ANN_GROUPS: principal_list(access[ep.name].groups),
        }
        if ep.protocol == "https" and not settings.guarded:  # a guard speaks HTTP, and HTTPS to the tool
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
        metadata = child_metadata(run, ingress_name(name, ep.name), ep.name)
        metadata["annotations"] = dict(sorted(annotations.items()))
        ingresses.append({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                          "metadata": metadata, "spec": spec})
    return ingresses

