"""Gateway API HTTPRoutes: one per HTTP endpoint, with the gate attached as external auth.

The counterpart of ingress.py for TOOLSHARE_ROUTING=gateway. Each HTTPRoute attaches to the
configured Gateway (TOOLSHARE_GATEWAY, optionally one listener), answers on the run's host (the
Ingress's), matches the endpoint's path prefix and sends to the run's Service on the endpoint's
Service port. It carries the endpoint's access list (access.py) as the Ingress does, in the same
annotations; principals never enter a path, URL or address. The gate's check is attached in the
form the Gateway implementation reads (TOOLSHARE_GATEWAY_AUTH):

- external-auth: the Gateway API ExternalAuth filter (experimental channel, GEP-1494) on the rule,
  calling the gate's Service over HTTP. The filter's path is a PREFIX: the implementation appends
  the client's request path (and query) to it, so the gate is asked
  /check/<ns>/<run>/<endpoint><client path> (docs/routing.md).
- traefik: an ExtensionRef filter naming a Traefik Middleware (traefik.io/v1alpha1), rendered here,
  one per endpoint in the run's namespace, whose forwardAuth calls the gate's URL as written.
- envoy-gateway: an Envoy Gateway SecurityPolicy (gateway.envoyproxy.io/v1alpha1), rendered here,
  one per route, targeting it, whose extAuth calls the gate's Service at exactly the check path
  (pathOverride, Envoy Gateway v1.8.0 and later).

Auth objects come before the routes that need them (the reconciler applies children in order):
an Envoy Gateway route without its SecurityPolicy would be served without the gate. The
companions carry no access list: a share change rewrites the HTTPRoutes' annotations alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from toolshare.access import access_for
from toolshare.model import Endpoint, host_for, http_endpoints, middleware_name, route_name, service_name
from toolshare.policy import Policy
from toolshare.render.common import RenderError, annotation, child_metadata, identity, principal_list
from toolshare.render.ingress import ANN_GROUPS, ANN_OWNER, ANN_USERS, auth_response_headers
from toolshare.render.service import render_service
from toolshare.settings import ENVOY_GATEWAY, EXTERNAL_AUTH, TRAEFIK, GateService, Settings

GATEWAY_GROUP = "gateway.networking.k8s.io"
HTTPROUTE_API_VERSION = f"{GATEWAY_GROUP}/v1"
TRAEFIK_GROUP = "traefik.io"
TRAEFIK_API_VERSION = f"{TRAEFIK_GROUP}/v1alpha1"
ENVOY_GATEWAY_API_VERSION = "gateway.envoyproxy.io/v1alpha1"
# Sent to the gate besides what GEP-1494 and Envoy always send (Host, Method, Path,
# Content-Length, Authorization): the browser's sign-in session is a cookie. (Traefik's
# forwardAuth sends every header of the request.)
AUTH_REQUEST_HEADERS = ("Cookie",)
# The routes and their auth objects, in the order render_routes returns them.
ROUTE_KINDS = ("Middleware", "SecurityPolicy", "HTTPRoute")


def check_path(namespace: str, name: str, endpoint: str) -> str:
    """The gate's check path of an endpoint (its route: /check/{namespace}/{run}/{endpoint})."""
    return f"/check/{namespace}/{name}/{endpoint}"


def render_routes(run: Mapping, shares: Iterable[Mapping], settings: Settings,
                  now: dt.datetime, runs_by_name: Mapping[str, Mapping] | None = None,
                  policy: Policy | None = None) -> list[dict]:
    """One HTTPRoute per HTTP endpoint, each with its own access list and the gate attached;
    the auth objects they need (traefik: Middlewares, envoy-gateway: SecurityPolicies) first."""
    name, namespace, owner = identity(run)
    endpoints = http_endpoints(run)
    if not endpoints:
        return []
    host = host_for(run, settings)
    access = access_for(run, shares, now, runs_by_name, policy)
    service = render_service(run)
    assert service is not None  # there are HTTP endpoints
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    companions, routes = [], []
    for ep in endpoints:
        route_filter: dict[str, Any]
        if settings.gateway_auth == TRAEFIK:
            middleware = _middleware(run, ep, annotation(settings.gate_url + check_path(namespace, name, ep.name)),
                                     settings)
            companions.append(middleware)
            route_filter = {"type": "ExtensionRef", "extensionRef": {
                "group": TRAEFIK_GROUP, "kind": "Middleware", "name": middleware["metadata"]["name"]}}
        elif settings.gateway_auth == EXTERNAL_AUTH:
            gate = _gate(settings)
            route_filter = {"type": "ExternalAuth", "externalAuth": {
                "protocol": "HTTP",
                "backendRef": _gate_ref(gate),
                "http": {"path": annotation(gate.path + check_path(namespace, name, ep.name)),
                         "allowedHeaders": list(AUTH_REQUEST_HEADERS),
                         "allowedResponseHeaders": list(auth_response_headers(settings))},
            }}
        elif settings.gateway_auth == ENVOY_GATEWAY:
            companions.append(_security_policy(run, ep, _gate(settings), settings))
            route_filter = {}
        else:  # Settings refuses any other value
            raise RenderError(f"unknown gateway auth {settings.gateway_auth!r}")
        rule: dict[str, Any] = {"matches": [{"path": {"type": "PathPrefix", "value": ep.path}}]}
        if route_filter:
            rule["filters"] = [route_filter]
        rule["backendRefs"] = [{"group": "", "kind": "Service", "name": service_name(name),
                                "port": ports[ep.name]}]
        metadata = child_metadata(run, route_name(name, ep.name), ep.name)
        metadata["annotations"] = dict(sorted({
            ANN_OWNER: principal_list([owner]),
            ANN_USERS: principal_list(access[ep.name].users),
            ANN_GROUPS: principal_list(access[ep.name].groups),
        }.items()))
        routes.append({"apiVersion": HTTPROUTE_API_VERSION, "kind": "HTTPRoute", "metadata": metadata,
                       "spec": {"parentRefs": [_parent_ref(settings)], "hostnames": [host],
                                "rules": [rule]}})
    return companions + routes


def _parent_ref(settings: Settings) -> dict[str, str]:
    gw_namespace, gw_name = settings.gateway_ref
    if not gw_name:  # Settings refuses gateway routing without a Gateway
        raise RenderError("no Gateway configured (TOOLSHARE_GATEWAY)")
    ref = {"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": gw_namespace, "name": gw_name}
    if settings.gateway_section:
        ref["sectionName"] = settings.gateway_section
    return ref


def _gate(settings: Settings) -> GateService:
    gate = settings.gate_service
    if gate is None:  # Settings refuses this combination
        raise RenderError("the gate URL names no Service (TOOLSHARE_GATE_URL)")
    return gate


def _gate_ref(gate: GateService) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": gate.name, "namespace": gate.namespace, "port": gate.port}


def _middleware(run: Mapping, ep: Endpoint, address: str, settings: Settings) -> dict:
    name, namespace, _ = identity(run)
    return {"apiVersion": TRAEFIK_API_VERSION, "kind": "Middleware",
            "metadata": child_metadata(run, middleware_name(namespace, name, ep.name), ep.name),
            "spec": {"forwardAuth": {"address": address,
                                     "authResponseHeaders": list(auth_response_headers(settings))}}}


def _security_policy(run: Mapping, ep: Endpoint, gate: GateService, settings: Settings) -> dict:
    name, namespace, _ = identity(run)
    return {"apiVersion": ENVOY_GATEWAY_API_VERSION, "kind": "SecurityPolicy",
            "metadata": child_metadata(run, route_name(name, ep.name), ep.name),
            "spec": {
                "targetRefs": [{"group": GATEWAY_GROUP, "kind": "HTTPRoute", "name": route_name(name, ep.name)}],
                "extAuth": {
                    "headersToExtAuth": list(AUTH_REQUEST_HEADERS),
                    "http": {"backendRefs": [_gate_ref(gate)],
                             "pathOverride": annotation(gate.path + check_path(namespace, name, ep.name)),
                             "headersToBackend": list(auth_response_headers(settings))},
                },
            }}
