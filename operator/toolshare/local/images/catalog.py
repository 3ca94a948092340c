"""The images built for the local node: their names, what each is built from, and in what order.

The names are a contract with the node (the pause image is its sandbox image), the samples and
the chart: Pods name them with `imagePullPolicy: Never` or `IfNotPresent`, since no registry
serves them. `toolshare.local` is a registry host that resolves nowhere, so a missing import
fails as a missing image rather than as a pull from somewhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import version

REGISTRY = "toolshare.local"
JUPYTERLAB_VERSION = "4.6.6"  # the jupyterlab pin of jupyterlab/requirements.txt (a unit test checks)

PAUSE = f"{REGISTRY}/pause:3.10"
DEBIAN = f"{REGISTRY}/debian:bookworm"
PYTHON = f"{REGISTRY}/python:3.11-bookworm"  # bookworm's python3; a base only, never imported
JUPYTERLAB = f"{REGISTRY}/jupyterlab:{JUPYTERLAB_VERSION}"
TOOLSHARE = f"{REGISTRY}/toolshare:{version('toolshare')}"

# Builders: "gcc" compiles the pause binary, "debootstrap" makes the Debian base, "buildah" runs a
# Containerfile FROM the base image's archive.
GCC, DEBOOTSTRAP, BUILDAH = "gcc", "debootstrap", "buildah"
# A buildah image's Containerfile and context: recipes/<recipe>/ next to this module, or the
# repository itself (the Toolshare image is built from the repository's Dockerfile).
REPOSITORY = "repository"


@dataclass(frozen=True)
class Image:
    ref: str
    builder: str
    base: str | None = None  # the image it is built FROM
    recipe: str = ""  # buildah: the directory under recipes/, or REPOSITORY
    pypi: bool = False  # its build installs from PyPI (so it gets the host's CA bundle, see buildah.py)
    imported: bool = True  # imported into containerd by default

    @property
    def name(self) -> str:
        """The short name `--only` takes: pause, debian, python, jupyterlab, toolshare."""
        return self.ref.split("/", 1)[1].split(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.ref.rsplit(":", 1)[1]


# In build order: every base before the images built on it.
CATALOG = (
    Image(PAUSE, GCC),
    Image(DEBIAN, DEBOOTSTRAP),
    Image(PYTHON, BUILDAH, base=DEBIAN, recipe="python", imported=False),
    Image(JUPYTERLAB, BUILDAH, base=PYTHON, recipe="jupyterlab", pypi=True),
    Image(TOOLSHARE, BUILDAH, base=PYTHON, recipe=REPOSITORY, pypi=True),
)
BY_REF = {image.ref: image for image in CATALOG}
BY_NAME = {image.name: image for image in CATALOG}
IMPORTED = tuple(image.ref for image in CATALOG if image.imported)

# The Toolshare image's build context: what its Dockerfile copies, nothing else (no .venv, no caches).
TOOLSHARE_CONTEXT = ("pyproject.toml", "README.md", "operator")
SKIPPED = re.compile(r"(^|/)(__pycache__|[^/]*\.egg-info)(/|$)|\.py[co]$")


class ImagesUnavailable(RuntimeError):
    """An image cannot be built here; the message says what is missing."""


class UnknownImage(ValueError):
    pass


def lookup(name: str) -> Image:
    """An image by its short name or its full reference."""
    image = BY_NAME.get(name) or BY_REF.get(name)
    if image is None:
        raise UnknownImage(f"no image {name!r}; known: {', '.join(BY_NAME)}")
    return image


def with_bases(names: list[str] | None = None) -> list[Image]:
    """The images to build for `names` (default: all), their bases included, in build order."""
    wanted = {lookup(n).ref for n in names} if names else set(BY_REF)
    for image in reversed(CATALOG):  # bases come earlier in the catalog, so one backward pass suffices
        if image.ref in wanted and image.base:
            wanted.add(image.base)
    return [image for image in CATALOG if image.ref in wanted]


def cache_entry(image: Image, key: str) -> str:
    """The cache directory of one build: readable name, then the key that makes it unique."""
    return f"{image.name}-{image.tag}_{key[:16]}"


def stale_entries(image: Image, entries: dict[str, float], current: str, keep: int = 1) -> list[str]:
    """Cache entries of `image` to delete after `current` was built or used: all but the `keep`
    most recently used others (a checkout going back and forth between two versions stays fast)."""
    prefix = f"{image.name}-"
    others = sorted((e for e in entries if e.startswith(prefix) and "_" in e and e != current
                     and not e.startswith(".")), key=lambda e: entries[e], reverse=True)
    return others[keep:]
