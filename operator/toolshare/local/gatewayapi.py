"""The CRDs of what the operator writes with TOOLSHARE_ROUTING=gateway, for a local control plane:
the Gateway API's HTTPRoute (and the rest of its experimental channel), Traefik's Middleware and
Envoy Gateway's SecurityPolicy. No Gateway controller: the API server alone stores and validates
the objects, which is what the write-budget tests need (tests/integration/test_gateway_children.py).

Where they come from, at the versions docs/routing.md names:
- Gateway API v1.4.0 (Traefik's pin) and Traefik v3.6.0: the Go module cache of tools/traefik, the
  modules Traefik is built from (`go list -m` there; downloaded with `go mod download` if the cache
  lacks them, go.sum pinning their content).
- Envoy Gateway v1.9.1: its module from the Go module proxy (`go mod download` in a throw-away
  module, about 2 s, 7.5 MB), whose SecurityPolicy CRD is then kept in ~/.cache/toolshare/envoy-gateway/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from toolshare.local.controlplane import binaries as binmod

GATEWAY_API = "sigs.k8s.io/gateway-api"
TRAEFIK = "github.com/traefik/traefik/v3"
ENVOY_GATEWAY, ENVOY_GATEWAY_VERSION = "github.com/envoyproxy/gateway", "v1.9.1"
MIDDLEWARE_CRD = "docs/content/reference/dynamic-configuration/traefik.io_middlewares.yaml"
SECURITY_POLICY_CRD = "charts/gateway-helm/charts/crds/crds/generated/gateway.envoyproxy.io_securitypolicies.yaml"
HTTPROUTE_CRD = "gateway.networking.k8s.io_httproutes.yaml"


class CRDsUnavailable(RuntimeError):
    """A CRD file cannot be found or fetched; the message names the module, the version and the path."""


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise CRDsUnavailable("Go is not installed: the Gateway API, Traefik and Envoy Gateway CRDs are read from "
                              "their Go modules (install Go 1.26 or newer)")
    return go


def _traefik_module() -> Path:
    for parent in Path(__file__).resolve().parents:
        if (parent / "tools" / "traefik" / "go.mod").exists():
            return parent / "tools" / "traefik"
    raise CRDsUnavailable("tools/traefik/go.mod was not found: it pins the Gateway API and Traefik modules whose "
                          "CRDs are used here")


def pinned_dir(module: str) -> Path:
    """The module cache directory of `module` at the version tools/traefik pins, downloading the
    module (checked against go.sum) when the cache lacks it."""
    go, tools = _go(), _traefik_module()
    env = {**os.environ, "GOFLAGS": "-mod=readonly"}

    def where() -> subprocess.CompletedProcess:
        return subprocess.run([go, "list", "-m", "-f", "{{.Version}} {{.Dir}}", module], cwd=tools, env=env,
                              capture_output=True, text=True, timeout=120)

    listed = where()
    if listed.returncode != 0:
        raise CRDsUnavailable(f"{tools}/go.mod does not pin {module}: {listed.stderr.strip()}")
    version, _, directory = listed.stdout.strip().partition(" ")
    if not directory:
        fetched = subprocess.run([go, "mod", "download", module], cwd=tools, env=env, capture_output=True,
                                 text=True, timeout=600)
        if fetched.returncode != 0:
            raise CRDsUnavailable(f"{module} {version} is not in the Go module cache and could not be downloaded "
                                  f"(go mod download in {tools}): {fetched.stderr.strip()[-2000:]}")
        version, _, directory = where().stdout.strip().partition(" ")
    if not directory or not Path(directory).is_dir():
        raise CRDsUnavailable(f"{module} {version}: no module directory in the Go module cache")
    return Path(directory)


def _file(module: str, directory: Path, relative: str) -> Path:
    path = directory / relative
    if not path.is_file():
        raise CRDsUnavailable(f"{module}: {relative} is missing from {directory}")
    return path


def gateway_api_crds(channel: str = "experimental") -> list[Path]:
    """The Gateway API CRDs of one release channel, as its kustomization.yaml lists them. The
    experimental channel is the one whose HTTPRoute takes the ExternalAuth filter."""
    directory = pinned_dir(GATEWAY_API) / "config" / "crd" / channel
    listing = _file(GATEWAY_API, directory.parent.parent.parent, f"config/crd/{channel}/kustomization.yaml")
    files = [_file(GATEWAY_API, directory, name) for name in yaml.safe_load(listing.read_text())["resources"]]
    if not any(f.name == HTTPROUTE_CRD for f in files):
        raise CRDsUnavailable(f"{GATEWAY_API}: {listing} lists no {HTTPROUTE_CRD}")
    return files


def traefik_middleware_crd() -> Path:
    """Traefik's Middleware CRD (traefik.io/v1alpha1), at the Traefik version tools/traefik pins."""
    return _file(TRAEFIK, pinned_dir(TRAEFIK), MIDDLEWARE_CRD)


def envoy_gateway_security_policy_crd(version: str = ENVOY_GATEWAY_VERSION) -> Path:
    """Envoy Gateway's SecurityPolicy CRD (gateway.envoyproxy.io/v1alpha1): from the cache, else
    from the module downloaded from the Go module proxy (GOPROXY) into the Go module cache."""
    target = binmod.cache_base() / "envoy-gateway" / version / Path(SECURITY_POLICY_CRD).name
    if target.is_file():
        return target
    go = _go()
    with tempfile.TemporaryDirectory(prefix="toolshare-envoy-gateway-") as scratch:
        (Path(scratch) / "go.mod").write_text("module scratch\n\ngo 1.22\n")
        env = {**os.environ, "GOFLAGS": "-mod=mod"}
        proc = subprocess.run([go, "mod", "download", "-json", f"{ENVOY_GATEWAY}@{version}"], cwd=scratch, env=env,
                              capture_output=True, text=True, timeout=600)
        try:
            answer = json.loads(proc.stdout) if proc.stdout.strip() else {}
        except ValueError:
            answer = {}
        if proc.returncode != 0 or answer.get("Error") or not answer.get("Dir"):
            reason = answer.get("Error") or proc.stderr.strip()[-2000:] or f"exit {proc.returncode}"
            raise CRDsUnavailable(f"could not download {ENVOY_GATEWAY}@{version} from the Go module proxy "
                                  f"(GOPROXY={os.environ.get('GOPROXY', 'default')}): {reason}")
    source = _file(f"{ENVOY_GATEWAY}@{version}", Path(answer["Dir"]), SECURITY_POLICY_CRD)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    partial.write_bytes(source.read_bytes())  # module cache files are read-only; the copy is not
    os.replace(partial, target)  # whole or not at all
    return target


def crd_files(auth: str | None = None, channel: str = "experimental") -> list[Path]:
    """The Gateway API channel's CRDs, plus the auth flavour's CRD: "traefik" (Middleware),
    "envoy-gateway" (SecurityPolicy), "all" (both), or None / "external-auth" (none)."""
    files = gateway_api_crds(channel)
    if auth in ("traefik", "all"):
        files.append(traefik_middleware_crd())
    if auth in ("envoy-gateway", "all"):
        files.append(envoy_gateway_security_policy_crd())
    return files


def install(bins: binmod.Binaries, kubeconfig: Path, files: list[Path], timeout: str = "60s") -> None:
    """Apply the CRD files server-side (the HTTPRoute CRD is too big for a client-side apply's
    annotation) and wait until each is Established."""
    from toolshare.local.dev import kubectl

    args = [a for f in files for a in ("-f", str(f))]
    applied = kubectl(bins, kubeconfig, "apply", "--server-side", "--field-manager=toolshare-dev", *args, check=False)
    if applied.returncode != 0:
        raise CRDsUnavailable(f"applying {', '.join(f.name for f in files)} failed: {applied.stderr.strip()}")
    kubectl(bins, kubeconfig, "wait", "--for=condition=Established", f"--timeout={timeout}", *args)
