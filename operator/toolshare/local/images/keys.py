"""Cache keys: a hash of every input of a build, so any change to any of them builds again.

Inputs are named byte strings: recipe texts, package pins, source files (with their executable
bit), tool versions, and the key of the base image, so a new base rebuilds what is built on it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

# Bumped when the builders' code changes what they produce in a way their inputs do not show.
FORMAT = b"toolshare-images/1"


def cache_key(inputs: Mapping[str, bytes]) -> str:
    """sha256 over the inputs, sorted by name, each name and value length-prefixed (unambiguous)."""
    digest = hashlib.sha256(FORMAT)
    for name in sorted(inputs):
        for part in (name.encode(), inputs[name]):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()


def describe(inputs: Mapping[str, bytes]) -> str:
    """One line per input, name and digest: comparing two entries' lists says why a build happened."""
    return "".join(f"{hashlib.sha256(inputs[n]).hexdigest()[:16]}  {n}\n" for n in sorted(inputs))


def tree(root: Path, paths: Iterable[str], skip=None) -> dict[str, tuple[int, bytes]]:
    """The files under `root`/`paths` (recursively), as {relative path: (mode, contents)}.

    The mode kept is 0o755 or 0o644, as git keeps it: a umask must not change a key. `skip` is a
    regular expression over relative paths (caches, build metadata).
    """
    found = {}
    for path in paths:
        top = root / path
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for file in files:
            rel = file.relative_to(root).as_posix()
            if skip is not None and skip.search(rel):
                continue
            mode = 0o755 if os.access(file, os.X_OK) else 0o644
            found[rel] = (mode, file.read_bytes())
    return found


def tree_inputs(files: Mapping[str, tuple[int, bytes]]) -> dict[str, bytes]:
    """A tree as key inputs: `file <path> <mode>` -> contents."""
    return {f"file {rel} {mode:o}": data for rel, (mode, data) in files.items()}


def write_tree(files: Mapping[str, tuple[int, bytes]], target: Path) -> None:
    """Write a tree read by `tree` (the build context is exactly what the key hashed)."""
    for rel, (mode, data) in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
