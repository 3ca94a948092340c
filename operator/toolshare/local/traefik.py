"""Traefik, the local cluster's router: built from its pinned Go module (tools/traefik), cached like
the control plane, and run by `make run` and the test session as the Ingress controller.

Its `kubernetesIngressNGINX` provider reads the operator's Ingresses as ingress-nginx would
(ingressClassName `nginx`, the IngressClass naming controller k8s.io/ingress-nginx), turns
`auth-url` and `auth-response-headers` into a forwardAuth middleware in front of the run's Pods (found
through EndpointSlices), and proxies websockets. What it does not honour of what the operator writes
is in docs/routing.md (`auth-signin`: the gate answers the sign-in redirect itself).

It runs on the host, outside the cluster, as the service account `toolshare-router/traefik`: an
endpoint, a bound token and the cluster CA (never a kubeconfig, which it would prefer). No cluster
DNS runs here, so the gate it calls is reached by address (TOOLSHARE_GATE_URL).

The build has no dashboard: the module's webui/static holds only a placeholder file (the web UI is
built with yarn by Traefik's Makefile before a release), so the binary compiles and runs, and its
dashboard pages are empty.
"""

from __future__ import annotations

import os
from pathlib import Path

import kubernetes
import yaml

from toolshare.local.controlplane import binaries as binmod

TOOL = binmod.GoTool(
    name="traefik", module="github.com/traefik/traefik/v3",
    package="github.com/traefik/traefik/v3/cmd/traefik", version_args=("version",),
    # As Traefik's Makefile and .goreleaser stamp it, with the release's codename (release.yaml's
    # CODENAME for v3.6); BuildDate stays unstamped so the build is reproducible.
    ldflags="-s -w -X github.com/traefik/traefik/v3/pkg/version.Version={version} "
            "-X github.com/traefik/traefik/v3/pkg/version.Codename=ramequin",
    override_env="TOOLSHARE_TRAEFIK",
    alternatives="set TOOLSHARE_TRAEFIK to a traefik v3 binary, or install Go 1.26+ so it can be built "
                 "from tools/traefik",
    cgo=False)  # as Traefik's own build: CGO_ENABLED=0, a static binary


def ensure(log=print) -> Path:
    """Path to traefik: $TOOLSHARE_TRAEFIK, the cache, or a fresh build."""
    return TOOL.ensure(log=log)


NAMESPACE, ACCOUNT = "toolshare-router", "traefik"
INGRESS_CLASS, CONTROLLER = "nginx", "k8s.io/ingress-nginx"  # what the operator's Ingresses name


def rbac_objects() -> list[dict]:
    """The router's namespace, service account and what its providers read (Traefik's documented
    RBAC for the ingress-nginx provider), and the IngressClass that makes it take Toolshare's Ingresses."""
    rules = [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["services", "secrets"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"], "verbs": ["update"]},
    ]
    name = f"{NAMESPACE}:{ACCOUNT}"
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT, "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": NAMESPACE}]},
        {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": INGRESS_CLASS},
         "spec": {"controller": CONTROLLER}},
    ]


def static_config(*, server: str, token_file: Path, ca_file: Path, port: int, ops_port: int,
                  access_log: Path) -> dict:
    """Traefik's static configuration: one HTTP entry point on loopback, ping on another, the
    ingress-nginx provider against `server`."""
    kube = {"endpoint": server, "token": str(token_file), "certAuthFilePath": str(ca_file),
            "throttleDuration": "0s"}  # every change at once: the tests time share -> first answer
    return {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},  # it would call out otherwise
        "experimental": {"kubernetesIngressNGINX": True},
        "entryPoints": {
            # No whole-request read deadline (60 s by default): long uploads to a tool must not be cut.
            "web": {"address": f"127.0.0.1:{port}",
                    "transport": {"respondingTimeouts": {"readTimeout": "0s"}}},
            "ops": {"address": f"127.0.0.1:{ops_port}"},
        },
        "ping": {"entryPoint": "ops"},
        "providers": {"kubernetesIngressNGINX": {**kube, "ingressClass": INGRESS_CLASS,
                                                 "controllerClass": CONTROLLER}},
        "log": {"level": "INFO"},
        "accessLog": {"filePath": str(access_log)},
    }


def apply(client: kubernetes.client.ApiClient, objects: list[dict]) -> None:
    """Server-side apply, as an administrator would `kubectl apply` them."""
    dyn = kubernetes.dynamic.DynamicClient(client)
    for obj in objects:
        resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        dyn.server_side_apply(resource, body=obj, name=obj["metadata"]["name"],
                              namespace=obj["metadata"].get("namespace"), field_manager="toolshare-router")


class Traefik:
    """Traefik in the foreground, reading the cluster at `client`'s server as the router's account.
    `url` is its HTTP entry point; requests name the run's host in Host."""

    def __init__(self, directory: Path, client: kubernetes.client.ApiClient):
        from toolshare.local.controlplane.cluster import free_port

        self.dir, self.client = directory, client
        self.port, self.ops_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service = None

    def start(self, timeout: float = 60.0) -> "Traefik":
        from toolshare.local.services import Service

        self.dir.mkdir(parents=True, exist_ok=True)
        apply(self.client, rbac_objects())
        token = kubernetes.client.CoreV1Api(self.client).create_namespaced_service_account_token(
            ACCOUNT, NAMESPACE, {"spec": {"expirationSeconds": 7 * 24 * 3600}}).status.token
        token_file, ca_file = self.dir / "token", self.dir / "ca.crt"
        token_file.write_text(token)
        token_file.chmod(0o600)
        ca_file.write_text(Path(self.client.configuration.ssl_ca_cert).read_text())
        config = static_config(server=self.client.configuration.host, token_file=token_file, ca_file=ca_file,
                               port=self.port, ops_port=self.ops_port, access_log=self.dir / "access.log")
        (self.dir / "traefik.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        # A kubeconfig or in-cluster variables would win over the endpoint and token above.
        env = {k: v for k, v in os.environ.items()
               if k != "KUBECONFIG" and not k.startswith("KUBERNETES_SERVICE_")}
        argv = [str(ensure()), f"--configFile={self.dir / 'traefik.yaml'}"]
        self.service = Service("traefik", argv, f"http://127.0.0.1:{self.ops_port}/ping", self.dir / "traefik.log",
                               base_env=env).start(timeout)
        return self

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()


if __name__ == "__main__":
    print(ensure())
