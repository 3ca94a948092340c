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
import time
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
# The Gateway API side: Traefik's GatewayClass, and the Gateway the operator's HTTPRoutes attach to
# (TOOLSHARE_GATEWAY=toolshare-router/toolshare).
GATEWAY_CLASS, GATEWAY_CONTROLLER, GATEWAY = "toolshare-traefik", "traefik.io/gateway-controller", "toolshare"
GATEWAY_API = "gateway.networking.k8s.io"
GATEWAY_KINDS = ("gatewayclasses", "gateways", "httproutes", "grpcroutes", "referencegrants", "backendtlspolicies")
TRAEFIK_KINDS = ("ingressroutes", "ingressroutetcps", "ingressrouteudps", "middlewares", "middlewaretcps",
                 "serverstransports", "serverstransporttcps", "tlsoptions", "tlsstores", "traefikservices")


def traefik_crds() -> list[Path]:
    """Traefik's own CRDs (its kubernetesCRD provider waits for all ten), from its module."""
    from toolshare.local import gatewayapi

    directory = gatewayapi.pinned_dir(gatewayapi.TRAEFIK) / "docs/content/reference/dynamic-configuration"
    return sorted(directory.glob("traefik.io_*.yaml"))


def _documents(files: list[Path]) -> list[dict]:
    return [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]


def gateway_objects(port: int) -> list[dict]:
    """Traefik's GatewayClass, and a Gateway whose HTTP listener is Traefik's `web` entry point (a
    listener's port must be an entry point's), open to routes from every namespace."""
    return [
        {"apiVersion": f"{GATEWAY_API}/v1", "kind": "GatewayClass", "metadata": {"name": GATEWAY_CLASS},
         "spec": {"controllerName": GATEWAY_CONTROLLER}},
        {"apiVersion": f"{GATEWAY_API}/v1", "kind": "Gateway", "metadata": {"name": GATEWAY, "namespace": NAMESPACE},
         "spec": {"gatewayClassName": GATEWAY_CLASS, "listeners": [
             {"name": "web", "protocol": "HTTP", "port": port, "allowedRoutes": {"namespaces": {"from": "All"}}}]}},
    ]


def rbac_objects(gateway: bool = False) -> list[dict]:
    """The router's namespace, service account and what its providers read (Traefik's documented
    RBAC), and the IngressClass that makes it take Toolshare's Ingresses."""
    rules = [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["services", "secrets"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"], "verbs": ["update"]},
    ]
    if gateway:
        rules += [
            {"apiGroups": [""], "resources": ["namespaces", "configmaps"], "verbs": ["list", "watch"]},
            {"apiGroups": [GATEWAY_API], "resources": list(GATEWAY_KINDS), "verbs": ["get", "list", "watch"]},
            {"apiGroups": [GATEWAY_API], "resources": [f"{k}/status" for k in GATEWAY_KINDS], "verbs": ["update"]},
            {"apiGroups": ["traefik.io"], "resources": list(TRAEFIK_KINDS), "verbs": ["get", "list", "watch"]},
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
                  access_log: Path, gateway: bool = False) -> dict:
    """Traefik's static configuration: one HTTP entry point on loopback, ping on another, the
    ingress-nginx provider against `server`; with `gateway` also the Gateway API provider and the
    CRD provider its ExtensionRef filters name Middlewares through."""
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
                                                 "controllerClass": CONTROLLER},
                      **({"kubernetesGateway": kube,
                          # Nodes are not read (cluster-scope resources off): nothing here needs them.
                          "kubernetesCRD": {**kube, "disableClusterScopeResources": True}} if gateway else {})},
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

    def __init__(self, directory: Path, client: kubernetes.client.ApiClient, gateway: bool = False):
        """`gateway`: also install the Gateway API CRDs (experimental channel) and Traefik's, and
        serve the HTTPRoutes attached to the Gateway toolshare-router/toolshare."""
        from toolshare.local.controlplane.cluster import free_port

        self.dir, self.client, self.gateway = directory, client, gateway
        self.port, self.ops_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service = None

    def start(self, timeout: float = 60.0) -> "Traefik":
        from toolshare.local.services import Service

        self.dir.mkdir(parents=True, exist_ok=True)
        gateway = self.gateway
        if gateway:  # the providers wait forever for a CRD that is missing when they start
            from toolshare.local import gatewayapi

            crds = _documents([*gatewayapi.gateway_api_crds(), *traefik_crds()])
            apply(self.client, crds)
            _wait_established(self.client, [c["metadata"]["name"] for c in crds])
        apply(self.client, rbac_objects(gateway))
        token = kubernetes.client.CoreV1Api(self.client).create_namespaced_service_account_token(
            ACCOUNT, NAMESPACE, {"spec": {"expirationSeconds": 7 * 24 * 3600}}).status.token
        token_file, ca_file = self.dir / "token", self.dir / "ca.crt"
        token_file.write_text(token)
        token_file.chmod(0o600)
        ca_file.write_text(Path(self.client.configuration.ssl_ca_cert).read_text())
        config = static_config(server=self.client.configuration.host, token_file=token_file, ca_file=ca_file,
                               port=self.port, ops_port=self.ops_port, access_log=self.dir / "access.log",
                               gateway=gateway)
        (self.dir / "traefik.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        # A kubeconfig or in-cluster variables would win over the endpoint and token above.
        env = {k: v for k, v in os.environ.items()
               if k != "KUBECONFIG" and not k.startswith("KUBERNETES_SERVICE_")}
        argv = [str(ensure()), f"--configFile={self.dir / 'traefik.yaml'}"]
        self.service = Service("traefik", argv, f"http://127.0.0.1:{self.ops_port}/ping", self.dir / "traefik.log",
                               base_env=env).start(timeout)
        if gateway:
            apply(self.client, gateway_objects(self.port))
        return self

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()


def _wait_established(client: kubernetes.client.ApiClient, names: list[str], timeout: float = 60.0) -> None:
    ext = kubernetes.client.ApiextensionsV1Api(client)
    deadline = time.monotonic() + timeout
    for name in names:
        while not any(c.type == "Established" and c.status == "True"
                      for c in ext.read_custom_resource_definition(name).status.conditions or []):
            if time.monotonic() > deadline:
                raise RuntimeError(f"CRD {name} not Established after {timeout:.0f}s")
            time.sleep(0.2)


if __name__ == "__main__":
    print(ensure())
