"""The pause image (toolshare.local/pause:3.10): the node's sandbox image.

Built as Kubernetes builds it (build/pause/Makefile): build/pause/linux/pause.c from the pinned
Kubernetes module (tools/controlplane), `gcc -Os -Wall -Werror -static`, stripped, run as
65535:65535 like registry.k8s.io/pause.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from toolshare.local.controlplane import binaries
from toolshare.local.images.catalog import ImagesUnavailable

VERSION = "3.10"
CFLAGS = ("-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{VERSION}")
SOURCE = "build/pause/linux/pause.c"
USER = "65535:65535"


def source() -> Path:
    """pause.c in the Go module cache, downloaded through the Go module proxy if it is not there."""
    try:
        module_dir = binaries.source_dir()
        version = binaries.pinned_versions(module_dir)["kubernetes"]
    except binaries.BinariesUnavailable as e:
        raise ImagesUnavailable(f"pause.c comes from the Kubernetes module tools/controlplane pins: {e}") from e
    # -json prints the module's directory; nothing is fetched when the module cache has it.
    proc = subprocess.run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{version}"], cwd=module_dir,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImagesUnavailable(f"go mod download k8s.io/kubernetes@{version} failed: {proc.stdout}{proc.stderr}")
    path = Path(json.loads(proc.stdout)["Dir"]) / SOURCE
    if not path.is_file():
        raise ImagesUnavailable(f"{path} is missing from k8s.io/kubernetes@{version}")
    return path


def compiler_version() -> str:
    return subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def key_inputs(pause_c: bytes, compiler: str) -> dict[str, bytes]:
    return {"pause.c": pause_c, "cflags": " ".join(CFLAGS).encode(), "compiler": compiler.encode(),
            "user": USER.encode()}


def build_rootfs(pause_c: Path, rootfs: Path, run) -> None:
    """rootfs/pause, the only file of the image."""
    binary = rootfs / "pause"
    run(["nice", "-n", "19", "gcc", *CFLAGS, "-o", str(binary), str(pause_c)], None)
    run(["strip", str(binary)], None)
    binary.chmod(0o755)
