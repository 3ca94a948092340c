"""The control-plane builder: cache keys, KUBEBUILDER_ASSETS, and failures that leave nothing behind."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from toolshare.local.controlplane import binaries


def _module(tmp_path: Path, extra: str = "") -> Path:
    mod = tmp_path / "module"
    mod.mkdir()
    (mod / "go.mod").write_text(
        "module example.test/cp\n\ngo 1.26.0\n\nrequire (\n\tk8s.io/kubernetes v1.36.3\n"
        f"\tgo.etcd.io/etcd/server/v3 v3.6.16\n)\n{extra}"
    )
    (mod / "go.sum").write_text("")
    return mod


def _fake_binaries(directory: Path, names=binaries.BINARIES) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = directory / name
        path.write_text("#!/bin/sh\necho fake\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_pinned_versions_come_from_the_repository_module():
    versions = binaries.pinned_versions(binaries.source_dir())
    major, minor = versions["kubernetes"].lstrip("v").split(".")[:2]
    assert (int(major), int(minor)) >= (1, 36)
    assert versions["etcd"].startswith("v3.")
    assert int(versions["etcd"].split(".")[1]) >= 6


def test_cache_key_names_versions_and_changes_with_the_pins(tmp_path):
    mod = _module(tmp_path)
    key = binaries.cache_key(mod)
    assert key.startswith("k8s-v1.36.3_etcd-v3.6.16_")
    assert binaries.cache_key(mod) == key
    (mod / "go.sum").write_text("example.test/x v1.0.0 h1:abc=\n")
    assert binaries.cache_key(mod) != key


def test_kubebuilder_assets_is_used_when_complete(tmp_path, monkeypatch):
    _fake_binaries(tmp_path / "assets")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "assets"))
    assert binaries.ensure_binaries().directory == tmp_path / "assets"


def test_incomplete_kubebuilder_assets_names_what_is_missing(tmp_path, monkeypatch):
    _fake_binaries(tmp_path / "assets", names=("etcd", "kube-apiserver"))
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "assets"))
    with pytest.raises(binaries.BinariesUnavailable, match="lacks kube-controller-manager, kubectl"):
        binaries.ensure_binaries()


def test_missing_go_names_the_alternatives(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("TOOLSHARE_CONTROLPLANE_MODULE", str(_module(tmp_path)))
    monkeypatch.setenv("TOOLSHARE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(binaries.BinariesUnavailable) as err:
        binaries.ensure_binaries(log=lambda *_: None)
    for hint in ("Go is not installed", "KUBEBUILDER_ASSETS", "TOOLSHARE_KUBECONFIG"):
        assert hint in str(err.value)


def test_failed_build_leaves_nothing_that_counts_as_cached(tmp_path, monkeypatch):
    # go.sum lacks every checksum, so `go build -mod=readonly` fails at once, offline.
    mod = _module(tmp_path)
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("TOOLSHARE_CONTROLPLANE_MODULE", str(mod))
    monkeypatch.setenv("TOOLSHARE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GOFLAGS", "-mod=readonly")
    monkeypatch.setenv("GOPROXY", "off")
    with pytest.raises(binaries.BinariesUnavailable, match="building etcd failed"):
        binaries.ensure_binaries(log=lambda *_: None)
    root = binaries.cache_root()
    leftovers = [p.name for p in root.iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_a_partial_directory_never_counts_as_complete(tmp_path, monkeypatch):
    mod = _module(tmp_path)
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("TOOLSHARE_CONTROLPLANE_MODULE", str(mod))
    monkeypatch.setenv("TOOLSHARE_CACHE_DIR", str(tmp_path / "cache"))
    target = binaries.cache_root() / binaries.cache_key(mod)
    _fake_binaries(target, names=("etcd", "kube-apiserver"))  # as if a copy had been cut short
    assert not binaries._complete(target)
    _fake_binaries(target)
    assert binaries.ensure_binaries().directory == target


def test_free_port_never_hands_out_a_port_twice():
    """`up` picks every component's port before any binds it: a port the kernel hands out again
    would put two servers on one port (the scheduler and kube-router's health server once)."""
    from toolshare.local.controlplane.cluster import free_port

    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


def test_free_ports_are_outside_the_kernels_ephemeral_range():
    """An outgoing connection's source port comes from that range: a listener chosen there may
    find it taken by the time it binds (the scheduler's "address already in use" in CI)."""
    from toolshare.local.controlplane.cluster import _ephemeral_range, free_port

    low, high = _ephemeral_range()
    assert all(not low <= free_port() <= high for _ in range(100))
