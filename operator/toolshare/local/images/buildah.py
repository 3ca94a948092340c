"""Images built from a Containerfile by Debian's buildah: no daemon, no registry.

`buildah bud` runs as root with chroot isolation (no nested namespaces or cgroups needed) and
the vfs storage driver (no overlay mounts), its storage in a directory of the build that is
deleted with it. The base comes in as a build argument, `BASE=docker-archive:<the base's
tarball>`, and the result goes out with `buildah push ... docker-archive:`.

Builds that install from PyPI get the host's CA bundle, for networks whose HTTPS is intercepted:
mounted read-only over the base's own /etc/ssl/certs/ca-certificates.crt for the build's RUN
steps (a file that exists, so no mount point is left in a layer) and named by `PIP_CERT`,
a build argument the Containerfiles declare. Nothing of the host's environment reaches the build.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CA_IN_BUILD = "/etc/ssl/certs/ca-certificates.crt"  # the base's (python3 images carry ca-certificates)


def version() -> str:
    return subprocess.run(["buildah", "--version"], capture_output=True, text=True).stdout.strip()


def build_args(base_archive: Path, pypi: bool) -> dict[str, str]:
    args = {"BASE": f"docker-archive:{base_archive}"}
    if pypi and CA_BUNDLE.is_file():
        args["PIP_CERT"] = CA_IN_BUILD
    return args


def key_build_args(pypi: bool) -> bytes:
    """The build arguments as they matter to the result (the base enters the key as its own key)."""
    return b"PIP_CERT" if pypi else b""


def argv(work: Path, containerfile: Path, context: Path, ref: str, args: dict[str, str],
         archive: Path) -> list[list[str]]:
    """The buildah commands: build `ref` from `containerfile`, then write it as a docker-archive."""
    common = ["buildah", "--root", str(work / "storage"), "--runroot", str(work / "run"), "--storage-driver", "vfs"]
    bud = [*common, "bud", "--isolation", "chroot", "--format", "docker", "--layers=false", "--pull-never",
           "-f", str(containerfile), "-t", ref]
    for name, value in sorted(args.items()):
        bud += ["--build-arg", f"{name}={value}"]
    if "PIP_CERT" in args:
        bud += ["-v", f"{CA_BUNDLE}:{CA_IN_BUILD}:ro"]
    push = [*common, "push", ref, f"docker-archive:{archive}:{ref}"]
    return [[*bud, str(context)], push]


def environment(work: Path) -> dict[str, str]:
    """A clean environment: no PYTHON*, PIP_* or VIRTUAL_ENV of the host; temporary files in the build."""
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(work),
            "TMPDIR": str(work / "tmp"), "LANG": "C.UTF-8"}
