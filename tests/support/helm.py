"""helm (built from tools/helm) and kubectl kustomize, rendering the chart and the kustomize base."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from toolshare.local import helm as helmtool
from toolshare.local.controlplane.binaries import ensure_binaries
from toolshare.local.dev import repo_root

CHART = repo_root() / "charts" / "toolshare"
MANIFESTS = repo_root() / "manifests"


def helm(*args: str, kubeconfig: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(helmtool.ensure()), *args]
    if kubeconfig is not None:
        cmd += ["--kubeconfig", str(kubeconfig)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc


def set_args(values: dict[str, str] | None) -> list[str]:
    return [a for k, v in (values or {}).items() for a in ("--set", f"{k}={v}")]


def template(values: dict[str, str] | None = None, release: str = "toolshare",
             namespace: str = "toolshare-system") -> tuple[str, list[dict]]:
    text = helm("template", release, str(CHART), "-n", namespace, *set_args(values)).stdout
    return text, [d for d in yaml.safe_load_all(text) if d]


def kustomize(directory: Path = MANIFESTS) -> tuple[str, list[dict]]:
    kubectl = ensure_binaries().path("kubectl")
    proc = subprocess.run([str(kubectl), "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout, [d for d in yaml.safe_load_all(proc.stdout) if d]


def by_key(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}
