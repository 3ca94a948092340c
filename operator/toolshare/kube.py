"""A thin raw-JSON Kubernetes client for the operator's writes.

It rides on the official client's ApiClient for authentication (kubeconfig, in-cluster tokens, exec
plugins) but sends and receives plain dicts: no model conversion, and server-side apply for children.
Every write is counted, so tests and benchmarks can hold the operator to its write budget.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field

import kubernetes

from .metrics import WRITES

# Path segments of the kinds the operator writes: (group/version path prefix, plural, namespaced).
KINDS = {
    ("v1", "Pod"): ("/api/v1", "pods"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "Event"): ("/api/v1", "events"),
    ("networking.k8s.io/v1", "Ingress"): ("/apis/networking.k8s.io/v1", "ingresses"),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("/apis/networking.k8s.io/v1", "networkpolicies"),
    ("toolshare.dev/v1alpha1", "ToolRun"): ("/apis/toolshare.dev/v1alpha1", "toolruns"),
    ("toolshare.dev/v1alpha1", "RunShare"): ("/apis/toolshare.dev/v1alpha1", "runshares"),
    ("toolshare.dev/v1alpha1", "ImageShare"): ("/apis/toolshare.dev/v1alpha1", "imageshares"),
}


class ApiError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"{status}: {body[:500]}")
        self.status = status
        self.body = body


def object_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    prefix, plural = KINDS[(api_version, kind)]
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


@dataclass
class Kube:
    api: kubernetes.client.ApiClient
    field_manager: str = "toolshare"
    writes: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_environment(cls, field_manager: str = "toolshare") -> "Kube":
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        return cls(kubernetes.client.ApiClient(), field_manager)

    def request(self, method: str, path: str, body=None, query: list | None = None,
                content_type: str = "application/json", kind: str = "") -> dict:
        if method != "GET":
            with self._lock:
                self.writes[method] += 1
            WRITES.labels(method, kind).inc()
        method_, url, headers, body_, _ = self.api.param_serialize(
            method, path, query_params=query or [], body=body,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(method_, url, header_params=headers, body=body_, _request_timeout=30)
        data = resp.read()
        if not 200 <= resp.status < 300:
            raise ApiError(resp.status, data.decode(errors="replace") if data else "")
        return json.loads(data) if data else {}

    def apply(self, obj: dict, force: bool = True) -> dict:
        """Server-side apply `obj` under our one field manager."""
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        query = [("fieldManager", self.field_manager)] + ([("force", "true")] if force else [])
        return self.request("PATCH", path, body=obj, query=query, content_type="application/apply-patch+yaml",
                            kind=obj["kind"])

    def merge_patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: dict) -> dict:
        path = object_path(api_version, kind, namespace, name) + "/status"
        return self.request("PATCH", path, body={"status": status}, content_type="application/merge-patch+json",
                            kind=f"{kind}/status")

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            self.request("DELETE", object_path(api_version, kind, namespace, name),
                         body={"propagationPolicy": "Background"}, kind=kind)
        except ApiError as e:
            if e.status != 404:
                raise

    def create(self, obj: dict) -> dict:
        meta = obj["metadata"]
        return self.request("POST", object_path(obj["apiVersion"], obj["kind"], meta["namespace"]), body=obj,
                            kind=obj["kind"])
