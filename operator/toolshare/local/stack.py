"""The sign-in path for `make run`: dev OIDC issuer, oauth2-proxy, the gate, a stand-in tool, nginx.

Started next to the operator by devenv.main. nginx is configured once the operator has written
the sample run's Ingress (a background thread waits for it), then the instructions are printed:
a curl reaching alice's run as bob, and the "Shared with me" page.
"""

from __future__ import annotations

import shutil
import threading
import time
import urllib.parse
from pathlib import Path

import kubernetes

from toolshare.local import services as devservices
from toolshare.local.issuer import DevIssuer
from toolshare.local.nginx import Nginx, endpoint_slice

SAMPLE = ("lab", "alice-notebook", "lab")  # namespace, run, endpoint of examples/dev
TOKEN_HOURS = 12


class AccessStack:
    def __init__(self, directory: Path, kubeconfig: Path):
        self.dir = directory / "access"
        self.kubeconfig = kubeconfig
        self.services: list[devservices.Service] = []
        self.issuer: DevIssuer | None = None
        self.nginx: Nginx | None = None

    def start(self) -> "AccessStack":
        self.dir.mkdir(parents=True, exist_ok=True)
        self.issuer = DevIssuer().start()
        proxy = devservices.oauth2_proxy(self.issuer.url, self.dir).start()
        gate = devservices.gate(self.kubeconfig, f"{proxy.url}/oauth2/auth", self.dir).start()
        tool = devservices.standin_tool(SAMPLE[1], self.dir).start()
        self.services = [proxy, gate, tool]
        threading.Thread(target=self._when_ingress_exists, args=(gate, tool), daemon=True,
                         name="dev-ingress").start()
        return self

    def _when_ingress_exists(self, gate, tool) -> None:
        namespace, run, endpoint = SAMPLE
        client = kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))
        net = kubernetes.client.NetworkingV1Api(client)
        ingress = None
        for _ in range(600):
            items = net.list_namespaced_ingress(
                namespace, label_selector=f"toolshare.dev/run={run},toolshare.dev/endpoint={endpoint}").items
            if items:
                ingress = client.sanitize_for_serialization(items[0])
                break
            time.sleep(0.2)
        bob = self.issuer.token("bob", ttl=TOKEN_HOURS * 3600)
        print("\nSign-in path (dev OIDC issuer -> oauth2-proxy -> gate):", flush=True)
        print(f"  BOB_TOKEN={bob}")
        print(f"  curl -i -H \"Authorization: Bearer $BOB_TOKEN\" {gate.url}/check/{namespace}/{run}/{endpoint}")
        print(f"  Shared with me:  curl -H \"Authorization: Bearer $BOB_TOKEN\" {gate.url}/api/shared-with-me")
        print(f"                   (page: {gate.url}/shared-with-me, with that Authorization header)")
        if ingress is None or shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
            print("  (no nginx: `make deps` installs it to reach the run itself)", flush=True)
            return
        try:
            kubernetes.client.DiscoveryV1Api(client).create_namespaced_endpoint_slice(
                namespace, endpoint_slice(namespace, run, endpoint, tool.port))
        except kubernetes.client.ApiException as e:
            if e.status != 409:
                raise
        self.nginx = Nginx(self.dir / "nginx")
        self.nginx.configure([ingress], client, gate_address=urllib.parse.urlsplit(gate.url).netloc)
        self.nginx.start()
        host = ingress["spec"]["rules"][0]["host"]
        path = ingress["spec"]["rules"][0]["http"]["paths"][0]["path"]
        print(f"  alice's run as bob, through nginx (Ingress {ingress['metadata']['name']}):")
        print(f"  curl -H \"Host: {host}\" -H \"Authorization: Bearer $BOB_TOKEN\" "
              f"http://127.0.0.1:{self.nginx.port}{path}", flush=True)

    def stop(self) -> None:
        if self.nginx:
            self.nginx.stop()
        for svc in reversed(self.services):
            svc.stop()
        if self.issuer:
            self.issuer.stop()
