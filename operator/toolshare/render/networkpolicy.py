"""The run's NetworkPolicy: deny all ingress but its HTTP ports from the router's namespace."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toolshare.model import http_endpoints, labels_for, ssh_endpoints
from toolshare.render.common import child_metadata, identity
from toolshare.render.guard import router_facing
from toolshare.settings import Settings


def render_network_policy(run: Mapping, settings: Settings) -> dict:
    """Deny all ingress to the pod except HTTP ports from the ingress controller's namespace (the
    guard's, when guarded: then the tool's own are reachable from the Pod alone) and SSH ports
    from the owner-access selector (if configured)."""
    name, _, _ = identity(run)
    rules = []
    http_ports = [{"port": router_facing(ep, run, settings), "protocol": "TCP"} for ep in http_endpoints(run)]
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
        "metadata": child_metadata(run, name),
        "spec": spec,
    }

