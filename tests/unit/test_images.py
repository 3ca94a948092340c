"""The local images' pure parts: names, build order, cache keys, archives, mirrors, containerd's listing."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tarfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from toolshare.cli.main import build_parser
from toolshare.local.images import archive, build, buildah, catalog, containerd, debian, keys, pause

REPO = Path(__file__).resolve().parents[2]
RECIPES = build.RECIPES


def test_names_are_the_contract_with_the_node():
    pins = dict(line.split("==") for line in (RECIPES / "jupyterlab/requirements.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert catalog.PAUSE == "toolshare.local/pause:3.10"
    assert catalog.DEBIAN == "toolshare.local/debian:bookworm"
    assert catalog.JUPYTERLAB == f"toolshare.local/jupyterlab:{pins['jupyterlab']}"
    assert catalog.TOOLSHARE == f"toolshare.local/toolshare:{version}"
    assert catalog.IMPORTED == (catalog.PAUSE, catalog.DEBIAN, catalog.JUPYTERLAB, catalog.TOOLSHARE)


def test_jupyterlab_requirements_pin_every_package():
    lines = [line for line in (RECIPES / "jupyterlab/requirements.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.+]*", line) for line in lines), lines
    assert {"jupyterlab", "ipykernel", "jupyter_server"} <= {line.split("==")[0] for line in lines}


def test_bases_are_built_first_and_only_when_needed():
    def names(wanted):
        return [image.name for image in catalog.with_bases(wanted)]

    assert names(["jupyterlab"]) == ["debian", "python", "jupyterlab"]
    assert names([catalog.TOOLSHARE]) == ["debian", "python", "toolshare"]
    assert names(["pause"]) == ["pause"]
    assert names(None) == ["pause", "debian", "python", "jupyterlab", "toolshare"]
    with pytest.raises(catalog.UnknownImage, match="known: pause, debian"):
        catalog.lookup("nginx")


def test_cache_key_changes_with_any_input_and_is_unambiguous():
    base = {"recipe": b"RUN a", "pins": b"x==1"}
    key = keys.cache_key(base)
    assert keys.cache_key(dict(reversed(base.items()))) == key
    assert keys.cache_key({**base, "pins": b"x==2"}) != key
    assert keys.cache_key({**base, "extra": b""}) != key
    assert keys.cache_key({"ab": b"c"}) != keys.cache_key({"a": b"bc"})


def test_tree_skips_caches_and_keeps_only_the_executable_bit(tmp_path):
    (tmp_path / "pkg/__pycache__").mkdir(parents=True)
    (tmp_path / "pkg/__pycache__/m.cpython-311.pyc").write_bytes(b"x")
    (tmp_path / "pkg.egg-info").mkdir()
    (tmp_path / "pkg.egg-info/PKG-INFO").write_text("x")
    (tmp_path / "pkg/m.py").write_text("print(1)\n")
    (tmp_path / "pkg/run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "pkg/m.py").chmod(0o600)
    (tmp_path / "pkg/run.sh").chmod(0o700)
    files = keys.tree(tmp_path, ["pkg", "pkg.egg-info"], skip=catalog.SKIPPED)
    assert files == {"pkg/m.py": (0o644, b"print(1)\n"), "pkg/run.sh": (0o755, b"#!/bin/sh\n")}
    keys.write_tree(files, tmp_path / "copy")
    assert keys.tree(tmp_path / "copy", ["pkg"]) == files


@pytest.fixture
def builder(tmp_path, monkeypatch):
    """A Builder over copies of the recipes and the repository, with the tools' versions fixed."""
    monkeypatch.setenv("TOOLSHARE_CACHE_DIR", str(tmp_path / "cache"))
    shutil.copytree(RECIPES, tmp_path / "recipes")
    repo = tmp_path / "repo"
    for name in ("Dockerfile", "pyproject.toml", "README.md"):
        (repo / name).parent.mkdir(exist_ok=True)
        shutil.copy(REPO / name, repo / name)
    (repo / "operator/toolshare").mkdir(parents=True)
    (repo / "operator/toolshare/model.py").write_text("X = 1\n")
    (tmp_path / "pause.c").write_text("int main() { return 0; }\n")
    monkeypatch.setattr(build, "TOOLS", {builder: () for builder in build.TOOLS})  # none needed here
    monkeypatch.setattr(build, "RECIPES", tmp_path / "recipes")
    monkeypatch.setattr(build, "repository", lambda: repo)
    monkeypatch.setattr(pause, "source", lambda: tmp_path / "pause.c")
    monkeypatch.setattr(pause, "compiler_version", lambda: "gcc 12.2.0")
    monkeypatch.setattr(buildah, "version", lambda: "buildah version 1.28.2")
    monkeypatch.setattr(debian, "debootstrap_version", lambda: "1.0.128")
    monkeypatch.setattr(debian, "host_sources", lambda: {"sources.list": "deb http://deb.debian.org/debian bookworm main"})
    return tmp_path


def _all_keys() -> dict[str, str]:
    b = build.Builder(log=lambda _: None)
    return {image.name: b.key(image) for image in catalog.CATALOG}


def test_a_changed_input_rebuilds_the_image_and_those_built_on_it(builder, monkeypatch):
    before = _all_keys()
    assert _all_keys() == before and len(set(before.values())) == len(before)

    (builder / "recipes/jupyterlab/requirements.txt").write_text("jupyterlab==9.9.9\n")
    after = _all_keys()
    assert {n for n in before if before[n] != after[n]} == {"jupyterlab"}

    monkeypatch.setattr(debian, "host_sources", lambda: {"s.list": "deb http://mirror.example/debian bookworm main"})
    moved = _all_keys()
    assert {n for n in after if after[n] != moved[n]} == {"debian", "python", "jupyterlab", "toolshare"}

    (builder / "pause.c").write_text("int main() { return 1; }\n")
    assert _all_keys()["pause"] != moved["pause"]


def test_an_interrupted_build_leaves_nothing_cached_and_concurrent_builders_build_once(builder, monkeypatch):
    monkeypatch.setattr(build.os, "geteuid", lambda: 0)
    calls = []

    def fake_build(self, image, staging, base):
        calls.append(image.name)
        (staging / build.ARCHIVE).write_bytes(b"half an archive")
        if len(calls) == 1:
            raise KeyboardInterrupt  # as a Ctrl-C in the middle of a build
        time.sleep(0.3)  # long enough for the other builder to wait on the lock

    monkeypatch.setattr(build.Builder, "_build", fake_build)
    pause_image = catalog.BY_NAME["pause"]
    with pytest.raises(KeyboardInterrupt):
        build.ensure(["pause"], log=lambda _: None)
    assert not [p.name for p in build.cache_root().iterdir() if p.is_dir()]  # no entry, no partial directory

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: build.ensure(["pause"], log=lambda _: None), range(2)))
    assert calls == ["pause", "pause"] and results[0] == results[1]
    entry = build.Builder(log=lambda _: None).entry(pause_image)
    assert results[0] == {catalog.PAUSE: entry / build.ARCHIVE} and "pause.c" in (entry / "inputs.txt").read_text()


def test_the_toolshare_image_key_follows_the_sources_not_their_caches(builder):
    before = _all_keys()["toolshare"]
    (builder / "repo/operator/toolshare/__pycache__").mkdir()
    (builder / "repo/operator/toolshare/__pycache__/model.cpython-311.pyc").write_bytes(b"cache")
    (builder / "repo/.venv").mkdir()
    assert _all_keys()["toolshare"] == before
    for change in (lambda: (builder / "repo/operator/toolshare/model.py").write_text("X = 2\n"),
                   lambda: (builder / "repo/Dockerfile").write_text("FROM scratch\n"),
                   lambda: (builder / "repo/operator/toolshare/model.py").chmod(0o755)):
        change()
        assert _all_keys()["toolshare"] != before
        before = _all_keys()["toolshare"]


def test_recipe_files_have_the_modes_the_image_needs():
    assert os.access(RECIPES / "jupyterlab/start.sh", os.X_OK)
    text = (RECIPES / "jupyterlab/Containerfile").read_text()
    assert "ARG PIP_CERT" in text and "ARG PIP_CERT" in (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=python:3\.13-slim$", (REPO / "Dockerfile").read_text(), re.MULTILINE)


@pytest.fixture
def rootfs(tmp_path):
    """A directory with the kinds of entries a layer must keep: owners, modes, links, device nodes."""
    root = tmp_path / "rootfs"
    other = 1000 if os.geteuid() == 0 else os.getuid()  # as root (CI), an owner unlike the writer's
    (root / "home/jovyan").mkdir(parents=True)
    (root / "home/jovyan").chmod(0o750)
    (root / "home/jovyan/.profile").write_text("x")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/su").write_text("#!/bin/sh\n")
    (root / "usr/bin/su").chmod(0o4755)
    os.link(root / "usr/bin/su", root / "usr/bin/su2")
    (root / "bin").symlink_to("usr/bin")
    (root / "dev").mkdir()
    (root / "dev/null-ish").write_text("")  # device nodes: the runtime provides /dev
    for path in (root / "home/jovyan", root / "home/jovyan/.profile"):
        os.lchown(path, other, other)
    return root


def test_layer_keeps_owners_modes_and_links_and_leaves_dev_empty(rootfs, tmp_path):
    diff_id = archive.write_layer(rootfs, tmp_path / "layer.tar")
    assert diff_id == "sha256:" + hashlib.sha256((tmp_path / "layer.tar").read_bytes()).hexdigest()
    with tarfile.open(tmp_path / "layer.tar") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert "dev" in members and not [n for n in members if n.startswith("dev/")]
    for name in ("home/jovyan", "home/jovyan/.profile", "usr/bin/su"):
        st = os.lstat(rootfs / name)
        assert (members[name].uid, members[name].gid) == (st.st_uid, st.st_gid), name
        assert members[name].mode == stat.S_IMODE(st.st_mode), name
        assert members[name].uname == members[name].gname == ""
    assert members["usr/bin/su"].mode == 0o4755
    assert members["usr/bin/su2"].islnk() and members["usr/bin/su2"].linkname == "usr/bin/su"
    assert members["bin"].issym() and members["bin"].linkname == "usr/bin"


def test_archive_names_the_image_and_lists_its_layers(rootfs, tmp_path):
    diff_id = archive.write_layer(rootfs, tmp_path / "layer.tar")
    config = archive.image_config([diff_id], entrypoint=["/pause"], user="65535:65535", created_by="test",
                                  created=0, machine="x86_64")
    archive.write_archive(tmp_path / "image.tar", "toolshare.local/pause:3.10", config, [tmp_path / "layer.tar"])
    entry, read = archive.read_manifest(tmp_path / "image.tar")
    assert entry["RepoTags"] == ["toolshare.local/pause:3.10"]
    assert read == config and read["architecture"] == "amd64" and read["created"] == "1970-01-01T00:00:00Z"
    assert read["config"]["Entrypoint"] == ["/pause"] and read["config"]["User"] == "65535:65535"
    assert archive.layer_digests(tmp_path / "image.tar") == [diff_id]
    assert {e.name for _, e in archive.layer_entries(tmp_path / "image.tar")} >= {"home/jovyan", "usr/bin/su"}


def test_the_mirror_is_the_hosts():
    one_line = {"sources.list": "# deb http://old.example/debian bookworm main\n"
                                "deb [arch=amd64] http://ftp.example/debian/ bookworm main\n"
                                "deb http://sec.example/debian-security bookworm-security main\n"}
    assert debian.mirrors(one_line) == ("http://ftp.example/debian", "http://sec.example/debian-security")
    deb822 = {"debian.sources":
              "Types: deb\n# a comment\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"
              "Components: main\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\n"
              "Suites: bookworm-security\nComponents: main\n",
              "old.sources": "Types: deb\nURIs: http://disabled.example/debian\nSuites: bookworm\nEnabled: no\n"}
    assert debian.mirrors(deb822) == ("http://deb.debian.org/debian", "http://deb.debian.org/debian-security")
    assert debian.mirrors({}) == (debian.DEFAULT_MIRROR, debian.DEFAULT_SECURITY)
    assert "Suites: bookworm bookworm-updates" in debian.sources_file(*debian.mirrors(deb822))


LISTING = """REF                                 TYPE                                                 DIGEST                                                                  SIZE      PLATFORMS   LABELS
toolshare.local/pause:3.10          application/vnd.docker.distribution.manifest.v2+json sha256:0f9c5a0e5d2c0b7a9e1b7d1c1c6f5bd1cbd3c7b0e3d2b6b4c9a1e2f3a4b5c6d7 675.1 KiB linux/amd64 io.cri-containerd.image=managed,io.cri-containerd.pinned=pinned,toolshare.dev/image-key=aaa
toolshare.local/debian:bookworm     application/vnd.docker.distribution.manifest.v2+json sha256:1f9c5a0e5d2c0b7a9e1b7d1c1c6f5bd1cbd3c7b0e3d2b6b4c9a1e2f3a4b5c6d7 122.0 MiB linux/amd64 -
"""


def test_only_missing_or_rebuilt_images_are_imported():
    labels = containerd.labels_by_ref(LISTING)
    assert labels["toolshare.local/pause:3.10"][containerd.KEY_LABEL] == "aaa"
    assert labels["toolshare.local/debian:bookworm"] == {}
    wanted = {catalog.PAUSE: "aaa", catalog.DEBIAN: "bbb", catalog.JUPYTERLAB: "ccc"}
    assert containerd.to_import(LISTING, wanted) == [catalog.DEBIAN, catalog.JUPYTERLAB]
    assert containerd.to_import(LISTING, {catalog.PAUSE: "aaa"}) == []
    assert containerd.to_import(LISTING, {catalog.PAUSE: "new"}) == [catalog.PAUSE]
    assert containerd.to_import("REF TYPE DIGEST SIZE PLATFORMS LABELS\n", {catalog.PAUSE: "aaa"}) == [catalog.PAUSE]


def test_the_cache_keeps_the_current_entry_and_the_last_other_one():
    jl = catalog.BY_NAME["jupyterlab"]
    entries = {"jupyterlab-4.6.6_new": 5.0, "jupyterlab-4.6.6_old": 1.0, "jupyterlab-4.6.5_recent": 4.0,
               "jupyterlab-4.6.6_older": 0.5, ".jupyterlab-4.6.6_x.partial-1": 0.1, "python-3.11-bookworm_a": 0.2,
               "jupyterlab.lock": 0.3}
    assert sorted(catalog.stale_entries(jl, entries, "jupyterlab-4.6.6_new")) == [
        "jupyterlab-4.6.6_old", "jupyterlab-4.6.6_older"]
    assert catalog.cache_entry(jl, "0123456789abcdef0123") == "jupyterlab-4.6.6_0123456789abcdef"


def test_a_build_directory_is_never_deleted_through_a_mount():
    info = ("22 1 0:21 / / rw - ext4 /dev/vda rw\n"
            "90 22 0:50 / /cache/images/.x.partial/rootfs/proc rw - proc proc rw\n"
            "91 22 0:51 / /cache/images/.x.partial/root\\040fs/dev rw - devtmpfs udev rw\n"
            "93 90 0:53 / /cache/images/.x.partial/rootfs/proc/sys/fs/binfmt_misc rw - binfmt_misc b rw\n"
            "92 22 0:52 / /cache/images/.x.partial-other/proc rw - proc proc rw\n")
    assert build.mounts_under(info, "/cache/images/.x.partial") == [  # deepest first
        "/cache/images/.x.partial/rootfs/proc/sys/fs/binfmt_misc", "/cache/images/.x.partial/rootfs/proc",
        "/cache/images/.x.partial/root fs/dev"]
    assert build.mounts_under(info, "/elsewhere") == []


def test_buildah_gets_a_clean_environment_and_the_ca_only_for_pypi(tmp_path):
    env = buildah.environment(tmp_path)
    assert not [k for k in env if k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))]
    bud, push = buildah.argv(tmp_path, tmp_path / "Containerfile", tmp_path, catalog.JUPYTERLAB,
                             buildah.build_args(tmp_path / "base.tar", pypi=True), tmp_path / "image.tar")
    assert f"BASE=docker-archive:{tmp_path / 'base.tar'}" in bud and "--isolation" in bud
    assert f"{buildah.CA_BUNDLE}:{buildah.CA_IN_BUILD}:ro" in bud
    assert push[-1] == f"docker-archive:{tmp_path / 'image.tar'}:{catalog.JUPYTERLAB}"
    bud, _ = buildah.argv(tmp_path, tmp_path / "Containerfile", tmp_path, catalog.PYTHON,
                          buildah.build_args(tmp_path / "base.tar", pypi=False), tmp_path / "image.tar")
    assert "-v" not in bud and not [a for a in bud if a.startswith("PIP_CERT")]


def test_a_missing_tool_is_named(monkeypatch):
    monkeypatch.setattr(build, "TOOLS", {**build.TOOLS, catalog.BUILDAH: ("buildah-not-installed",)})
    with pytest.raises(catalog.ImagesUnavailable, match="built with buildah-not-installed.*make deps"):
        build.Builder(log=lambda _: None).key(catalog.BY_NAME["python"])


def test_the_cli_builds_and_imports():
    args = build_parser().parse_args(["images", "build", "--only", "jupyterlab", "--import-to",
                                      "/run/c.sock", "--ctr", "/x/ctr"])
    assert (args.only, args.import_to, args.ctr) == ("jupyterlab", "/run/c.sock", "/x/ctr")
