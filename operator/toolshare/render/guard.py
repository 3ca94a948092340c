"""The run's guard (guard/app.py): a second container in the run's Pod, in front of every HTTP
endpoint. Pure.

With a guard (TOOLSHARE_GUARD_IMAGE), each HTTP endpoint's name and Service target move from the
tool's port to the guard's, the NetworkPolicy admits the router to the guard's ports only, so the
tool's own ports are reachable from nowhere but the Pod itself, and the router passes the gate's
grant on (grant.HEADER among the auth response headers). SSH endpoints stay on the tool: they
are never routed and never guarded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toolshare.model import Endpoint, http_endpoints, spec_of
from toolshare.settings import Settings

GUARD_CONTAINER = "toolshare-guard"
GUARD_UID = 10001  # the Toolshare image's user
OPS_PORT_START = 15020  # /readyz, /healthz: the first port from here the run does not use
GUARD_OFFSET = 10000  # an endpoint's guard port: its port + this, or the highest free one


def _used(run: Mapping) -> set[int]:
    return {ep.get("port") for ep in spec_of(run).get("endpoints") or [] if isinstance(ep, Mapping)}


def guard_ports(run: Mapping) -> dict[str, int]:
    """Each HTTP endpoint's guard port: deterministic, distinct, never one the run declares."""
    used = _used(run) | {ops_port(run)}
    ports: dict[str, int] = {}
    for ep in http_endpoints(run):
        port = ep.port + GUARD_OFFSET
        if port > 65535 or port in used:
            port = next(p for p in range(65535, 1024, -1) if p not in used)
        used.add(port)
        ports[ep.name] = port
    return ports


def ops_port(run: Mapping) -> int:
    used = _used(run)
    return next(p for p in range(OPS_PORT_START, 65536) if p not in used)


def guard_endpoints_env(run: Mapping) -> str:
    """TOOLSHARE_GUARD_ENDPOINTS (guard/config.py): endpoint=guard port:tool port[:https]."""
    ports = guard_ports(run)
    return ",".join(f"{ep.name}={ports[ep.name]}:{ep.port}" + (":https" if ep.protocol == "https" else "")
                    for ep in http_endpoints(run))


def render_guard(run: Mapping, namespace: str, name: str, settings: Settings) -> dict[str, Any]:
    """The guard container: the Toolshare image, no API token (the Pod mounts none), no privileges."""
    ports = guard_ports(run)
    ops = ops_port(run)
    return {
        "name": GUARD_CONTAINER,
        "image": settings.guard_image,
        "command": ["toolshare", "guard"],
        "env": [{"name": "TOOLSHARE_GUARD_RUN", "value": f"{namespace}/{name}"},
                {"name": "TOOLSHARE_GUARD_ENDPOINTS", "value": guard_endpoints_env(run)},
                {"name": "TOOLSHARE_GUARD_OPS_PORT", "value": str(ops)},
                {"name": "TOOLSHARE_GATE_URL", "value": settings.gate_url},
                {"name": "TOOLSHARE_GRANT_PUBLIC_KEY", "value": settings.grant_public_key}],
        "ports": [{"name": ep, "containerPort": port, "protocol": "TCP"} for ep, port in ports.items()],
        # Ready while it follows the gate: until then (and whenever the gate is gone) the Service
        # sends nothing here and ToolReady says why.
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": ops}, "periodSeconds": 2,
                           "timeoutSeconds": 2, "successThreshold": 1, "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": ops}, "periodSeconds": 10,
                          "timeoutSeconds": 2, "failureThreshold": 3},
        # 31 MB idle, 70 MB holding 1,000 websockets (BENCHMARKS.md, "Guard").
        "resources": {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": GUARD_UID, "runAsGroup": GUARD_UID,
                            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
    }


def router_facing(ep: Endpoint, run: Mapping, settings: Settings) -> int:
    """The port the router's traffic for `ep` must reach in the Pod: the guard's, or the tool's."""
    return guard_ports(run)[ep.name] if settings.guarded else ep.port
