"""Import the images into the node's containerd, in the namespace the kubelet uses (k8s.io).

Each imported image carries two labels: its cache key, so a later call imports only what was
rebuilt since (one `ctr images ls` when nothing was), and `io.cri-containerd.pinned=pinned`, so
the kubelet's image garbage collection never removes an image no registry could give back.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

from toolshare.local.images import catalog
from toolshare.local.images.build import Builder
from toolshare.local.images.catalog import ImagesUnavailable

NAMESPACE = "k8s.io"
KEY_LABEL = "toolshare.dev/image-key"
PINNED = "io.cri-containerd.pinned=pinned"


def labels_by_ref(listing: str) -> dict[str, dict[str, str]]:
    """{reference: labels} from `ctr images ls` (REF TYPE DIGEST SIZE PLATFORMS LABELS; SIZE has a
    space, so the labels are the last column, `-` when there are none)."""
    found = {}
    for line in listing.splitlines()[1:]:
        cells = line.split()
        if len(cells) < 2:
            continue
        pairs = [] if cells[-1] == "-" else cells[-1].split(",")
        found[cells[0]] = dict(p.partition("=")[::2] for p in pairs)
    return found


def to_import(listing: str, wanted: dict[str, str]) -> list[str]:
    """The references of `wanted` ({reference: key}) that containerd lacks or holds with another key."""
    present = labels_by_ref(listing)
    return [ref for ref, key in wanted.items() if present.get(ref, {}).get(KEY_LABEL) != key]


def import_images(ctr: Path, address: Path, names: Iterable[str] = catalog.IMPORTED, *,
                  snapshotter: str | None = None, log: Callable[[str], None] = print) -> list[str]:
    """Build what is missing from the cache, then import into containerd at `address` what it lacks.

    `names`: short names or references (default: every image the node uses). Returns the
    references imported by this call; none when containerd already holds the current images.
    """
    def ctr_run(*args: str, timeout: float = 60) -> str:
        proc = subprocess.run([str(ctr), "--address", str(address), "--namespace", NAMESPACE, *args],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise ImagesUnavailable(f"ctr {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    builder = Builder(log)
    images = [catalog.lookup(n) for n in names]
    wanted = {image.ref: builder.key(image) for image in images}
    missing = to_import(ctr_run("images", "ls"), wanted)
    for image in images:
        if image.ref not in missing:
            continue
        tarball = builder.ensure(image)
        log(f"importing {image.ref} into containerd at {address}")
        extra = ["--snapshotter", snapshotter] if snapshotter else []
        ctr_run("images", "import", "--all-platforms", *extra, str(tarball), timeout=900)
        ctr_run("images", "label", image.ref, f"{KEY_LABEL}={wanted[image.ref]}", PINNED)
    return missing
