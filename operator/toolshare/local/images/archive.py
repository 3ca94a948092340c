"""Docker-archive tarballs: what `docker save` writes, `ctr images import` and buildah read.

Written here for the images assembled from a directory (pause, the Debian base). The layer is a
tar of the directory with every file's numeric owner and mode as they are on disk: an extractor
running as root applies them, so a directory owned by uid 1000 stays owned by 1000 in the
container (a layer written with the builder's owners broke an earlier image's home directory).
Names are left out of the headers on purpose: containerd applies numeric ids, other tools might
map a name through the host's /etc/passwd.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

# Directories the runtime mounts over (devtmpfs, proc, sysfs): kept, their contents are not.
RUNTIME_MOUNTS = ("dev", "proc", "sys")
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}


class _Hashing(io.RawIOBase):
    """A write-only file that hashes what passes through it (the layer's diff id)."""

    def __init__(self, out):
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)


def _layer_entry(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    parts = info.name.split("/")
    if len(parts) > 1 and parts[0] in RUNTIME_MOUNTS:
        return None
    info.uname = info.gname = ""
    return info


def write_layer(root: Path, out_path: Path) -> str:
    """Tar `root`'s contents into `out_path` (names relative to root); return the layer's diff id."""
    with open(out_path, "wb") as raw:
        hashing = _Hashing(raw)
        with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for entry in sorted(os.listdir(root)):
                tar.add(root / entry, arcname=entry, filter=_layer_entry)
    return f"sha256:{hashing.sha.hexdigest()}"


def image_config(diff_ids: list[str], *, entrypoint: list[str] | None = None, cmd: list[str] | None = None,
                 user: str = "", env: list[str] | None = None, created_by: str, created: float | None = None,
                 machine: str | None = None) -> dict:
    """The image configuration (Docker/OCI image spec) for the given layers."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if created is None else created))
    machine = machine or platform.machine()
    config = {"Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
              "WorkingDir": "/"}
    if entrypoint:
        config["Entrypoint"] = entrypoint
    if cmd:
        config["Cmd"] = cmd
    if user:
        config["User"] = user
    return {
        "architecture": ARCHITECTURES.get(machine, machine),
        "os": "linux",
        "created": stamp,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": stamp, "created_by": created_by}],
    }


def write_archive(path: Path, ref: str, config: dict, layers: list[Path]) -> None:
    """A docker-archive of one image named `ref`: manifest.json, the config, the layers in order."""
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_names = [d.removeprefix("sha256:") + ".tar" for d in config["rootfs"]["diff_ids"]]
    manifest = json.dumps([{"Config": config_name, "RepoTags": [ref], "Layers": layer_names}]).encode()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, layer in zip(layer_names, layers):
            tar.add(layer, arcname=name)
        for name, data in ((config_name, config_bytes), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))


def read_manifest(path: Path) -> tuple[dict, dict]:
    """(manifest entry, image config) of a single-image docker-archive."""
    with tarfile.open(path) as tar:
        [entry] = json.load(tar.extractfile("manifest.json"))
        config = json.load(tar.extractfile(entry["Config"]))
    return entry, config


def layer_digests(path: Path) -> list[str]:
    """The sha256 of each layer tar as stored, in order (each must equal its diff id)."""
    entry, _ = read_manifest(path)
    found = []
    with tarfile.open(path) as tar:
        for name in entry["Layers"]:
            sha, stream = hashlib.sha256(), tar.extractfile(name)
            while chunk := stream.read(1 << 20):
                sha.update(chunk)
            found.append(f"sha256:{sha.hexdigest()}")
    return found


def layer_entries(path: Path) -> Iterator[tuple[int, tarfile.TarInfo]]:
    """Every entry of every layer, as (layer index, header), in the order they are applied."""
    entry, _ = read_manifest(path)
    with tarfile.open(path) as tar:
        for index, name in enumerate(entry["Layers"]):
            with tarfile.open(fileobj=tar.extractfile(name), mode="r|") as layer:
                for info in layer:
                    yield index, info
