"""Build the local images, or find them in the cache: ~/.cache/toolshare/images/<name>-<tag>_<key>/image.tar.

The key hashes every input of an image (keys.py), its base's key included. A build runs in a
temporary directory renamed into place once the archive is complete, so an interrupted build
never counts as cached; a lock per image makes a second builder wait for the first and then
take its result.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from toolshare.local.controlplane import binaries
from toolshare.local.images import archive, buildah, catalog, debian, keys, pause
from toolshare.local.images.catalog import Image, ImagesUnavailable

ARCHIVE = "image.tar"
RECIPES = Path(__file__).parent / "recipes"
# What each builder needs from Debian (`make deps` installs them).
TOOLS = {catalog.GCC: ("gcc", "strip", "go"), catalog.DEBOOTSTRAP: ("debootstrap", "unshare", "chroot"),
         catalog.BUILDAH: ("buildah", "unshare")}


def cache_root() -> Path:
    return binaries.cache_base() / "images"


def repository() -> Path:
    """The checkout holding the Toolshare Dockerfile."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "Dockerfile").is_file() and (parent / "pyproject.toml").is_file():
            return parent
    raise ImagesUnavailable("the repository's Dockerfile was not found next to this installation of toolshare")


def _run(argv: list[str], env: dict[str, str] | None, log_path: Path) -> None:
    """One build step, its output appended to the build's log (whose end a failure quotes)."""
    with open(log_path, "ab") as log:
        proc = subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise ImagesUnavailable(f"`{' '.join(argv[:8])} ...` failed (exit {proc.returncode}):\n{tail}")


class Builder:
    """Keys and builds for one session: each image's key is computed once, its base's first."""

    def __init__(self, log: Callable[[str], None] = print):
        self.log = log
        self._keys: dict[str, str] = {}
        self._inputs: dict[str, dict[str, bytes]] = {}
        self._trees: dict[str, dict[str, tuple[int, bytes]]] = {}

    # -- inputs ---------------------------------------------------------------------------------
    def _context(self, image: Image) -> tuple[dict[str, tuple[int, bytes]], str]:
        """(the build context as files, the Containerfile's name in it)."""
        if image.ref not in self._trees:
            if image.recipe == catalog.REPOSITORY:
                root = repository()
                files = keys.tree(root, ("Dockerfile", *catalog.TOOLSHARE_CONTEXT), skip=catalog.SKIPPED)
            else:
                files = keys.tree(RECIPES / image.recipe, ["."], skip=catalog.SKIPPED)
                files = {rel.removeprefix("./"): v for rel, v in files.items()}
            self._trees[image.ref] = files
        return self._trees[image.ref], "Dockerfile" if image.recipe == catalog.REPOSITORY else "Containerfile"

    def inputs(self, image: Image) -> dict[str, bytes]:
        missing = [t for t in TOOLS[image.builder] if shutil.which(t) is None]
        if missing:  # their versions are inputs too
            raise ImagesUnavailable(f"{image.ref} is built with {', '.join(missing)}, missing here: `make deps` "
                                    "installs the Debian packages (debootstrap, buildah, runc, gcc); Go 1.26+ for pause")
        if image.builder == catalog.GCC:
            return pause.key_inputs(pause.source().read_bytes(), pause.compiler_version())
        if image.builder == catalog.DEBOOTSTRAP:
            return debian.key_inputs(*debian.mirrors(debian.host_sources()), debian.debootstrap_version())
        files, _ = self._context(image)
        return {**keys.tree_inputs(files), "base": self.key(catalog.BY_REF[image.base]).encode(),
                "buildah": buildah.version().encode(), "build-args": buildah.key_build_args(image.pypi)}

    def key(self, image: Image) -> str:
        if image.ref not in self._keys:
            self._inputs[image.ref] = {"ref": image.ref.encode(), **self.inputs(image)}
            self._keys[image.ref] = keys.cache_key(self._inputs[image.ref])
        return self._keys[image.ref]

    def entry(self, image: Image) -> Path:
        return cache_root() / catalog.cache_entry(image, self.key(image))

    # -- builds ---------------------------------------------------------------------------------
    def ensure(self, image: Image) -> Path:
        """The image's archive: from the cache, or built (its base first) and cached."""
        target = self.entry(image)
        if not (target / ARCHIVE).is_file():
            base = self.ensure(catalog.BY_REF[image.base]) if image.base else None
            self._build_locked(image, target, base)
        os.utime(target)  # most recently used: kept when older entries are pruned
        return target / ARCHIVE

    def _build_locked(self, image: Image, target: Path, base: Path | None) -> None:
        if os.geteuid() != 0:
            raise ImagesUnavailable(f"building {image.ref} needs root (debootstrap, chroot, buildah's chroot "
                                    "isolation; the files' owners must be kept)")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / f"{image.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent builder of the same image waits here
            if (target / ARCHIVE).is_file():
                return
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
            staging.chmod(0o755)
            started = time.monotonic()
            self.log(f"building {image.ref} ({image.builder}); log: {staging / 'build.log'}")
            try:
                self._build(image, staging, base)
                (staging / "inputs.txt").write_text(keys.describe(self._inputs[image.ref]))  # why it was rebuilt
                for leftover in ("work", "rootfs", "layer.tar"):
                    _remove(staging / leftover)
                if target.exists():
                    _remove(target)
                os.rename(staging, target)  # atomic: the cache entry appears whole or not at all
            except BaseException:
                kept = cache_root() / f".failed-{image.name}.log"
                if (staging / "build.log").exists():
                    shutil.copyfile(staging / "build.log", kept)
                    self.log(f"  {image.ref} failed; its log: {kept}")
                raise
            finally:
                _remove(staging)
            (cache_root() / f".failed-{image.name}.log").unlink(missing_ok=True)
            self._prune(image, target.name)
            size = (target / ARCHIVE).stat().st_size
            self.log(f"  built {image.ref}: {size / 2**20:.0f} MiB in {time.monotonic() - started:.0f}s")

    def _build(self, image: Image, staging: Path, base: Path | None) -> None:
        log = staging / "build.log"

        def run(argv: list[str], env: dict[str, str] | None) -> None:
            _run(argv, env, log)

        if image.builder == catalog.BUILDAH:
            work, context = staging / "work", staging / "work" / "context"
            (work / "tmp").mkdir(parents=True)
            files, containerfile = self._context(image)
            keys.write_tree(files, context)
            for argv in buildah.argv(work, context / containerfile, context, image.ref,
                                     buildah.build_args(base, image.pypi), staging / ARCHIVE):
                run(["nice", "-n", "19", "unshare", "--mount", "--propagation", "private", *argv],
                    buildah.environment(work))
            return
        rootfs = staging / "rootfs"
        rootfs.mkdir(mode=0o755)
        if image.builder == catalog.GCC:
            pause.build_rootfs(pause.source(), rootfs, run)
            config = dict(entrypoint=["/pause"], user=pause.USER,
                          created_by=f"gcc {' '.join(pause.CFLAGS)} {pause.SOURCE} (toolshare images)")
        else:
            mirror, security = debian.mirrors(debian.host_sources())
            debian.build_rootfs(rootfs, mirror, security, run)
            config = dict(cmd=["bash"], created_by=f"debootstrap --variant={debian.VARIANT} {debian.SUITE} {mirror}"
                                                   " (toolshare images)")
        diff_id = archive.write_layer(rootfs, staging / "layer.tar")
        archive.write_archive(staging / ARCHIVE, image.ref, archive.image_config([diff_id], **config),
                              [staging / "layer.tar"])

    def _prune(self, image: Image, current: str) -> None:
        root = cache_root()
        entries = {p.name: p.stat().st_mtime for p in root.iterdir() if p.is_dir()}
        for name in catalog.stale_entries(image, entries, current):
            self.log(f"  removing the older {name} from the cache")
            _remove(root / name)


def mounts_under(mountinfo: str, path: str) -> list[str]:
    """Mount points at or below `path` in a /proc/<pid>/mountinfo text, deepest first."""
    found = []
    for line in mountinfo.splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # spaces come as \040
        if point == path or point.startswith(path.rstrip("/") + "/"):
            found.append(point)
    return sorted(found, key=lambda p: (p.count("/"), p), reverse=True)


def _remove(path: Path) -> None:
    """Delete a build directory, never through a mount (a chroot's /proc or /dev would be the host's)."""
    if not path.exists() and not path.is_symlink():
        return
    if mounted := mounts_under(Path("/proc/self/mountinfo").read_text(), str(path.resolve())):
        raise ImagesUnavailable(f"not deleting {path}: {', '.join(mounted)} still mounted there")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def ensure(names: list[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Path]:
    """Every image in `names` (short names or references; default: all) as {reference: archive}."""
    builder = Builder(log)
    return {image.ref: builder.ensure(image) for image in catalog.with_bases(names)}
