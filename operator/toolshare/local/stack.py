"""The sign-in path for `make run`: dev OIDC issuer, oauth2-proxy, the gate, nginx.

Started next to the operator by dev.main. nginx is configured once the operator has written
the sample run's Ingress and its JupyterLab, a Pod on the local node, is ready behind the run's
Service (a background thread waits for both), then the instructions are printed:
how to get a token, the gate's decision, "Shared with me", and a curl reaching alice's run.

Two files in the cluster directory let other terminals use the stack: access/issuer.json (0600:
the issuer's key, key id, URL and client id, kept across restarts, for `toolshare dev token`) and
access/urls.json (where the gate and nginx listen, for `toolshare list --shared-with-me` and the
token's usage hints; removed when the stack stops).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.parse
from pathlib import Path

import kubernetes

from toolshare.local import services as devservices
from toolshare.local.issuer import DevIssuer
from toolshare.local.nginx import IngressError, Nginx, backend_address

SAMPLE = ("lab", "alice-notebook", "lab")  # namespace, run, endpoint of examples/dev/alice


def issuer_file(directory: Path) -> Path:
    return Path(directory) / "access" / "issuer.json"


def urls_file(directory: Path) -> Path:
    return Path(directory) / "access" / "urls.json"


def read_urls(directory: Path) -> dict:
    """Where a running `toolshare dev` in `directory` listens: {"gate"} at once, then "proxy" (nginx)
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
        lines += [f"{run} through nginx (Ingress {urls['ingress']}):",
                  f'curl -H "Host: {urls["host"]}" {auth} {urls["proxy"]}{urls["path"]}']
    return lines


class AccessStack:
    def __init__(self, directory: Path, kubeconfig: Path, dir_flag: str = ""):
        self.cluster_dir = directory
        self.dir = directory / "access"
        self.kubeconfig = kubeconfig
        self.dir_flag = dir_flag  # " --dir DIR" for printed commands, when not the default
        self.services: list[devservices.Service] = []
        self.issuer: DevIssuer | None = None
        self.nginx: Nginx | None = None

    def start(self) -> "AccessStack":
        self.dir.mkdir(parents=True, exist_ok=True)
        self.issuer = DevIssuer.persistent(issuer_file(self.cluster_dir))
        proxy = devservices.oauth2_proxy(self.issuer.url, self.dir).start()
        gate = devservices.gate(self.kubeconfig, f"{proxy.url}/oauth2/auth", self.dir).start()
        self.services = [proxy, gate]
        _write_urls(self.cluster_dir, {"gate": gate.url})
        threading.Thread(target=self._when_ingress_exists, args=(gate,), daemon=True,
                         name="dev-ingress").start()
        return self

    def _when_ingress_exists(self, gate) -> None:
        namespace, run, endpoint = SAMPLE
        client = kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))
        net = kubernetes.client.NetworkingV1Api(client)
        ingress = None
        deadline = time.monotonic() + 600  # a first JupyterLab start on a busy machine
        while ingress is None and time.monotonic() < deadline:
            items = net.list_namespaced_ingress(
                namespace, label_selector=f"toolshare.dev/run={run},toolshare.dev/endpoint={endpoint}").items
            if items:
                ingress = client.sanitize_for_serialization(items[0])
                try:  # the tool is ready (its readiness probe) behind the run's Service
                    backend_address(client, namespace, run, endpoint)
                except IngressError:
                    ingress = None
            if ingress is None:
                time.sleep(0.5)
        urls = {"gate": gate.url}
        no_nginx = ingress is None or shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists()
        if not no_nginx:
            urls.update(self._start_nginx(client, ingress, gate))
            _write_urls(self.cluster_dir, urls)
        print("\nSign-in path (dev OIDC issuer -> oauth2-proxy -> gate):")
        print(f"  export TOOLSHARE_TOKEN=$(toolshare dev token bob{self.dir_flag})"
              "      # or alice, carol, dave, anyone; --group G")
        for line in usage_lines(urls, "$TOOLSHARE_TOKEN"):
            print(f"  {line}")
        if no_nginx:
            print("  (no nginx: `make deps` installs it to reach the run itself)")
        alice = self.cluster_dir / "alice.kubeconfig"
        print(f"Sharing, as alice:  KUBECONFIG={alice} kubectl toolshare share {run} --user carol -n {namespace}",
              flush=True)

    def _start_nginx(self, client, ingress: dict, gate) -> dict:
        """nginx configured from the sample's Ingress, in front of the JupyterLab Pod's address."""
        self.nginx = Nginx(self.dir / "nginx")
        self.nginx.configure([ingress], client, gate_address=urllib.parse.urlsplit(gate.url).netloc)
        self.nginx.start()
        rule = ingress["spec"]["rules"][0]
        return {"proxy": f"http://127.0.0.1:{self.nginx.port}", "ingress": ingress["metadata"]["name"],
                "host": rule["host"], "path": rule["http"]["paths"][0]["path"]}

    def stop(self) -> None:
        urls_file(self.cluster_dir).unlink(missing_ok=True)
        if self.nginx:
            self.nginx.stop()
        for svc in reversed(self.services):
            svc.stop()
        if self.issuer:
            self.issuer.stop()
