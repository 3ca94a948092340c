"""A real nginx (Debian's, with auth_request) configured from Toolshare's Ingress, as ingress-nginx would.

Used by the end-to-end test and by `make run` (no ingress controller runs locally).

Traefik's kubernetesIngressNGINX provider was the first choice, but Traefik cannot be built from its
Go module here (several of its transitive modules are not served by the module proxy), so this
helper plays the ingress controller's part: it reads the Ingress, its Service and the Service's
EndpointSlices from the API server and writes the nginx configuration ingress-nginx generates for
the external-auth annotations: `auth_request` to auth-url, 401 -> redirect to auth-signin, the
auth-response-headers copied from the gate's answer onto the upstream request.

No cluster DNS runs here and nginx runs on the host, so two names are resolved by hand: the gate
Service's host in auth-url is mapped to the local gate (`gate_address`), and the backend is the Pod
address and port the EndpointSlice lists for the Service port the Ingress names (the host reaches
Pods on the node's bridge). The real ingress controller in front of the node is issue 14's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import kubernetes

from toolshare.local.controlplane.cluster import free_port
from toolshare.local.services import Service

NGINX = "nginx.ingress.kubernetes.io/"


class IngressError(RuntimeError):
    pass


def backend_address(client: kubernetes.client.ApiClient, namespace: str, service: str, port_name: str) -> str:
    """host:port of the first ready endpoint for the Service port, from its EndpointSlices."""
    slices = kubernetes.client.DiscoveryV1Api(client).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}").items
    for sl in slices:
        port = next((p.port for p in sl.ports or [] if p.name == port_name), None)
        for ep in sl.endpoints or []:
            if port and (ep.conditions is None or ep.conditions.ready is not False):
                return f"{ep.addresses[0]}:{port}"  # the Pod's address on the node's bridge
    raise IngressError(f"no ready endpoint for {namespace}/{service} port {port_name}")


def _signin(url: str) -> str:
    # ingress-nginx adds rd=$pass_access_scheme://$http_host$escaped_request_uri when absent.
    return url if "rd=" in url else url + ("&" if "?" in url else "?") + "rd=$scheme://$http_host$escaped_request_uri"


def server_block(ingress: dict, client: kubernetes.client.ApiClient, gate_address: str, listen: int) -> str:
    meta, spec = ingress["metadata"], ingress["spec"]
    ann = meta.get("annotations") or {}
    auth = urllib.parse.urlsplit(ann[NGINX + "auth-url"])
    auth_url = f"http://{gate_address}{auth.path}"  # the gate Service's DNS name, resolved locally
    headers = [h.strip() for h in ann.get(NGINX + "auth-response-headers", "").split(",") if h.strip()]
    rule = spec["rules"][0]
    path = rule["http"]["paths"][0]
    backend = path["backend"]["service"]
    upstream = backend_address(client, meta["namespace"], backend["name"], backend["port"]["name"])
    sets = "".join(
        f"      auth_request_set $auth_{i} $upstream_http_{h.lower().replace('-', '_')};\n"
        f"      proxy_set_header {h} $auth_{i};\n" for i, h in enumerate(headers))
    return f"""
  server {{
    listen 127.0.0.1:{listen};
    server_name {rule['host']};
    # ingress-nginx's own variable (URL-escaped request URI, via its set_escape_uri).
    set $escaped_request_uri $request_uri;
    location = /_external-auth {{
      internal;
      proxy_pass {auth_url};
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header Host {auth.netloc};
    }}
    location @signin {{
      return 302 {_signin(ann[NGINX + 'auth-signin'])};
    }}
    location {path['path']} {{
      auth_request /_external-auth;
{sets}      error_page 401 = @signin;
      # As ingress-nginx proxies: HTTP/1.1 with websocket upgrades (Jupyter's kernels), and the
      # client's Host, which a tool compares with the Origin of a websocket.
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $http_host;
      proxy_read_timeout 3600s;
      proxy_pass http://{upstream};
    }}
  }}
"""


class Nginx:
    """nginx in the foreground in its own prefix directory, serving the given Ingresses."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.port = free_port()
        self.service: Service | None = None
        self.binary = shutil.which("nginx") or "/usr/sbin/nginx"

    def configure(self, ingresses: list[dict], client: kubernetes.client.ApiClient, gate_address: str) -> None:
        for sub in ("logs", "tmp"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        servers = "".join(server_block(i, client, gate_address, self.port) for i in ingresses)
        tmp = self.dir / "tmp"
        (self.dir / "nginx.conf").write_text(f"""
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log {self.dir}/logs/access.log;
  server_names_hash_bucket_size 128;  # run hosts are up to 253 characters
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  server {{ listen 127.0.0.1:{self.port} default_server; location = /healthz {{ return 200; }} location / {{ return 404; }} }}
{servers}
}}
""")

    def start(self) -> "Nginx":
        if not os.access(self.binary, os.X_OK):
            raise IngressError("nginx is not installed: run `make deps` (apt-get install nginx-light)")
        argv = [self.binary, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-e", str(self.dir / "logs/error.log")]
        check = subprocess.run([*argv, "-t"], capture_output=True, text=True)
        if check.returncode != 0:
            raise IngressError(f"nginx rejected the configuration:\n{check.stderr}")
        self.service = Service("nginx", [*argv, "-g", "daemon off;"], f"http://127.0.0.1:{self.port}/healthz",
                               self.dir / "logs" / "stderr.log").start(timeout=20)
        return self

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
