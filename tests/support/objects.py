"""Building and reading Toolshare objects in tests."""

from __future__ import annotations

import kubernetes

GROUP, VERSION = "toolshare.dev", "v1alpha1"


def toolrun(name: str, owner: str = "alice", endpoints=None, labels=None, friendly: str | None = None) -> dict:
    spec = {
        "owner": owner,
        "image": "quay.io/jupyter/base-notebook:2026-11-02",
        "endpoints": endpoints if endpoints is not None else [
            {"name": "lab", "port": 8888, "protocol": "http"},
            {"name": "ssh", "port": 22, "protocol": "ssh"},
        ],
    }
    if friendly:
        spec["friendlyName"] = friendly
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ToolRun",
            "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def runshare(name: str, run: str | None = None, selector: dict | None = None, users=(), groups=(),
             endpoints=None, expires_at: str | None = None) -> dict:
    spec: dict = {}
    if run:
        spec["runRef"] = {"name": run}
    if selector is not None:
        spec["runSelector"] = selector
    _principals(spec, users, groups)
    if endpoints is not None:
        spec["endpoints"] = endpoints
    if expires_at:
        spec["expiresAt"] = expires_at
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RunShare", "metadata": {"name": name}, "spec": spec}


def imageshare(name: str, image: str, users=(), groups=(), owner: str | None = None) -> dict:
    spec: dict = {"image": image}
    _principals(spec, users, groups)
    if owner is not None:
        spec["owner"] = owner
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ImageShare", "metadata": {"name": name}, "spec": spec}


def _principals(spec: dict, users, groups) -> None:
    if users:
        spec["users"] = list(users)
    if groups:
        spec["groups"] = list(groups)


class Toolshare:
    """CRUD on ToolRuns and RunShares as one identity, returning plain dicts."""

    def __init__(self, client: kubernetes.client.ApiClient, namespace: str):
        self.api = kubernetes.client.CustomObjectsApi(client)
        self.core = kubernetes.client.CoreV1Api(client)
        self.net = kubernetes.client.NetworkingV1Api(client)
        self.ns = namespace

    def create(self, obj: dict) -> dict:
        plural = obj["kind"].lower() + "s"
        return self.api.create_namespaced_custom_object(GROUP, VERSION, self.ns, plural, obj)

    def get(self, plural: str, name: str) -> dict | None:
        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, self.ns, plural, name)
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                return None
            raise

    def list(self, plural: str) -> list[dict]:
        return sorted(self.api.list_namespaced_custom_object(GROUP, VERSION, self.ns, plural)["items"],
                      key=lambda o: o["metadata"]["name"])

    def patch(self, plural: str, name: str, patch: dict) -> dict:
        return self.api.patch_namespaced_custom_object(GROUP, VERSION, self.ns, plural, name, patch)

    def delete(self, plural: str, name: str) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, self.ns, plural, name)

    def ingresses(self, run: str) -> dict[str, dict]:
        items = self.net.list_namespaced_ingress(self.ns, label_selector=f"toolshare.dev/run={run}").items
        return {i.metadata.labels["toolshare.dev/endpoint"]: kubernetes.client.ApiClient().sanitize_for_serialization(i)
                for i in items}

    def annotations(self, run: str) -> dict[str, dict]:
        return {ep: ing["metadata"]["annotations"] for ep, ing in self.ingresses(run).items()}

    def condition(self, plural: str, name: str, type_: str = "Ready") -> dict | None:
        obj = self.get(plural, name) or {}
        return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)

    def events(self, run: str) -> list[tuple[str, str]]:
        items = self.core.list_namespaced_event(self.ns, field_selector=f"involvedObject.name={run}").items
        return [(e.reason, e.message) for e in items]
