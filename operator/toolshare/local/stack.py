"""The sign-in path for `make run`: dev OIDC issuer, oauth2-proxy, the gate, Traefik.

Started next to the operator by dev.main. Traefik (the local Ingress controller) picks up the
sample run's Ingress once the operator writes it; once its JupyterLab, a Pod on the local node, is
ready behind the run's Service and Traefik routes to it (a background thread waits for both), the
instructions are printed:
how to get a token, the gate's decision, "Shared with me", and a curl reaching alice's run.

Two files in the cluster directory let other terminals use the stack: access/issuer.json (0600:
the issuer's key, key id, URL and client id, kept across restarts, for `toolshare dev token`) and
access/urls.json (where the gate and Traefik listen, for `toolshare list --shared-with-me` and the
token's usage hints; removed when the stack stops).
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import kubernetes

from toolshare.local import services as devservices
from toolshare.local.issuer import DevIssuer
from toolshare.local.traefik import Traefik

SAMPLE = ("lab", "alice-notebook", "lab")  # namespace, run, endpoint of examples/dev/alice


def issuer_file(directory: Path) -> Path:
    return Path(directory) / "access" / "issuer.json"


def urls_file(directory: Path) -> Path:
    return Path(directory) / "access" / "urls.json"


def read_urls(directory: Path) -> dict:
    """Where a running `toolshare dev` in `directory` listens: {"gate"} at once, then "proxy" (Traefik)
    with the sample's "ingress", "host" and "path"; {} when none runs there."""
    try:
        return json.loads(urls_file(directory).read_text())
    except (OSError, ValueError):
        return {}


def _write_urls(directory: Path, urls: dict) -> None:
    path = urls_file(directory)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(urls, indent=1))
    os.replace(tmp, path)


def usage_lines(urls: dict, token: str) -> list[str]:
    """The curls that use a token (`token` is how the shell names it), for what is up in `urls`."""
    namespace, run, endpoint = SAMPLE
    auth = f'-H "Authorization: Bearer {token}"'
    lines = []
    if gate := urls.get("gate"):
        lines += [f"curl -i {auth} {gate}/check/{namespace}/{run}/{endpoint}",
                  f"Shared with me:  curl {auth} {gate}/api/shared-with-me",
                  f"                 (or: toolshare list --shared-with-me; page: {gate}/shared-with-me)"]
    if urls.get("proxy"):
        lines += [f"{run} through Traefik (Ingress {urls['ingress']}):",
                  f'curl -H "Host: {urls["host"]}" {auth} {urls["proxy"]}{urls["path"]}']
    return lines


def _serving(client: kubernetes.client.ApiClient, namespace: str, service: str, port_name: str) -> bool:
    """Whether an EndpointSlice of the Service lists a ready endpoint for the port (the tool's
    readiness probe passed)."""
    slices = kubernetes.client.DiscoveryV1Api(client).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}").items
    return any(any(p.name == port_name for p in sl.ports or []) and
               any(ep.conditions is None or ep.conditions.ready is not False for ep in sl.endpoints or [])
               for sl in slices)


def _routed(url: str, host: str, path: str) -> bool:
    """Whether the router has a route for host/path (it answers 404 until it loads the Ingress)."""
    request = urllib.request.Request(f"{url}{path}", headers={"Host": host})
    try:
        with devservices.NO_REDIRECT.open(request, timeout=5):
            return True
    except urllib.error.HTTPError as e:
        return e.code != 404
    except OSError:
        return False


class AccessStack:
    def __init__(self, directory: Path, kubeconfig: Path, dir_flag: str = ""):
        self.cluster_dir = directory
        self.dir = directory / "access"
        self.kubeconfig = kubeconfig
        self.dir_flag = dir_flag  # " --dir DIR" for printed commands, when not the default
        self.services: list[devservices.Service] = []
        self.issuer: DevIssuer | None = None
        self.router: Traefik | None = None
        self.gate_url = ""

    def start(self) -> "AccessStack":
        self.dir.mkdir(parents=True, exist_ok=True)
        self.issuer = DevIssuer.persistent(issuer_file(self.cluster_dir))
        proxy = devservices.oauth2_proxy(self.issuer.url, self.dir).start()
        gate = devservices.gate(self.kubeconfig, f"{proxy.url}/oauth2/auth", self.dir).start()
        self.services = [proxy, gate]
        self.gate_url = gate.url  # the operator's TOOLSHARE_GATE_URL: no cluster DNS for Traefik here
        client = kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))
        self.router = Traefik(self.dir / "traefik", client).start()
        _write_urls(self.cluster_dir, {"gate": gate.url})
        threading.Thread(target=self._when_routed, args=(client,), daemon=True, name="dev-ingress").start()
        return self

    def _when_routed(self, client) -> None:
        namespace, run, endpoint = SAMPLE
        assert self.router is not None
        net = kubernetes.client.NetworkingV1Api(client)
        ingress = None
        deadline = time.monotonic() + 600  # a first JupyterLab start on a busy machine
        while ingress is None and time.monotonic() < deadline:
            items = net.list_namespaced_ingress(
                namespace, label_selector=f"toolshare.dev/run={run},toolshare.dev/endpoint={endpoint}").items
            if items:
                ingress = client.sanitize_for_serialization(items[0])
                rule = ingress["spec"]["rules"][0]
                if not (_serving(client, namespace, run, endpoint)
                        and _routed(self.router.url, rule["host"], rule["http"]["paths"][0]["path"])):
                    ingress = None
            if ingress is None:
                time.sleep(0.5)
        urls = {"gate": self.gate_url}
        if ingress is not None:
            rule = ingress["spec"]["rules"][0]
            urls.update({"proxy": self.router.url, "ingress": ingress["metadata"]["name"],
                         "host": rule["host"], "path": rule["http"]["paths"][0]["path"]})
            _write_urls(self.cluster_dir, urls)
        print("\nSign-in path (dev OIDC issuer -> oauth2-proxy -> gate):")
        print(f"  export TOOLSHARE_TOKEN=$(toolshare dev token bob{self.dir_flag})"
              "      # or alice, carol, dave, anyone; --group G")
        for line in usage_lines(urls, "$TOOLSHARE_TOKEN"):
            print(f"  {line}")
        alice = self.cluster_dir / "alice.kubeconfig"
        print(f"Sharing, as alice:  KUBECONFIG={alice} kubectl toolshare share {run} --user carol -n {namespace}",
              flush=True)

    def stop(self) -> None:
        urls_file(self.cluster_dir).unlink(missing_ok=True)
        if self.router:
            self.router.stop()
        for svc in reversed(self.services):
            svc.stop()
        if self.issuer:
            self.issuer.stop()
