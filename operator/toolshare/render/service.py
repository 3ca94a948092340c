"""The run's Service: its HTTP endpoints only (SSH never gets a Service port)."""

from __future__ import annotations

from collections.abc import Mapping

from toolshare.model import http_endpoints, labels_for, service_name
from toolshare.render.common import child_metadata, identity


def render_service(run: Mapping) -> dict | None:
    """ClusterIP Service with the HTTP/HTTPS ports only, by name; None when there are none."""
    name, _, _ = identity(run)
    endpoints = http_endpoints(run)
    if not endpoints:
        return None
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": child_metadata(run, service_name(name)),
        "spec": {
            "type": "ClusterIP",
            "selector": labels_for(name),
            "ports": [{"name": ep.name, "port": ep.port, "targetPort": ep.name,
                       "protocol": "TCP", "appProtocol": ep.protocol} for ep in endpoints],
        },
    }

