"""The run's Pod: the tool container with its declared ports, no API token; with a guard
(render/guard.py) the guard container too, which then holds the HTTP endpoints' port names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toolshare.model import CONTAINER_NAME, as_list, get, http_endpoints, spec_of, ssh_endpoints
from toolshare.render.common import child_metadata, identity
from toolshare.render.guard import render_guard
from toolshare.settings import Settings


def render_pod(run: Mapping, settings: Settings | None = None) -> dict:
    name, namespace, _ = identity(run)
    guarded = settings is not None and settings.guarded
    spec = spec_of(run)
    container: dict[str, Any] = {"name": CONTAINER_NAME, "image": spec.get("image")}
    for field in ("command", "args"):
        values = as_list(spec.get(field))
        if values and all(isinstance(v, str) for v in values):
            container[field] = values
    env = [{"name": e["name"], "value": e["value"] if isinstance(e.get("value"), str) else ""}
           for e in as_list(spec.get("env")) if isinstance(e, Mapping) and isinstance(e.get("name"), str)]
    if env:
        container["env"] = env
    resources = {k: dict(v) for k, v in (get(spec, "resources") or {}).items()
                 if k in ("requests", "limits") and isinstance(v, Mapping)}
    if resources:
        container["resources"] = resources
    ports = sorted(http_endpoints(run) + ssh_endpoints(run), key=lambda ep: ep.name)
    if ports:
        # Guarded, an HTTP endpoint's name is the guard's port (the Service targets it by name).
        container["ports"] = [{"containerPort": ep.port, "protocol": "TCP"}
                              if guarded and ep.protocol != "ssh" else
                              {"name": ep.name, "containerPort": ep.port, "protocol": "TCP"} for ep in ports]
    http = http_endpoints(run)
    if http:
        # Ready (so ToolReady, and the Service's endpoints) once the tool answers on its first
        # HTTP port, not the moment its process starts: a sharee sent the link too early would
        # get the router's 502.
        container["readinessProbe"] = {"tcpSocket": {"port": http[0].port}, "periodSeconds": 5,
                                       "timeoutSeconds": 2, "successThreshold": 1, "failureThreshold": 3}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": child_metadata(run, name),
        "spec": {
            "containers": [container, *([render_guard(run, namespace, name, settings)] if guarded else [])],
            # A shared tool has no business talking to the Kubernetes API.
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
        },
    }

