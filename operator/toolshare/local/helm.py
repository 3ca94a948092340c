"""helm: built from its pinned Go module (tools/helm), cached like the control plane.

Only the chart's tests and `make binaries` need it; the operator never runs helm.
`python -m toolshare.local.helm` builds or locates it and prints its path.
"""

from __future__ import annotations

from pathlib import Path

from toolshare.local.controlplane import binaries as binmod

TOOL = binmod.GoTool(
    name="helm", module="helm.sh/helm/v3", package="helm.sh/helm/v3/cmd/helm", version_args=("version",),
    # As helm's Makefile stamps it: its version, and the Kubernetes minor of its client-go (v0.37),
    # which `helm template` and `helm lint` assume when no cluster is asked.
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version={version} "
            "-X helm.sh/helm/v3/internal/version.gitTreeState=clean "
            + " ".join(f"-X helm.sh/helm/v3/pkg/{pkg}.k8sVersion{part}={value}"
                       for pkg in ("chartutil", "lint/rules") for part, value in (("Major", 1), ("Minor", 37))),
    override_env="TOOLSHARE_HELM",
    alternatives="set TOOLSHARE_HELM to a helm v3 binary, or install Go 1.26+ so it can be built from tools/helm")


def ensure(log=print) -> Path:
    """Path to helm: $TOOLSHARE_HELM, the cache, or a fresh build."""
    return TOOL.ensure(log=log)


if __name__ == "__main__":
    print(ensure())
