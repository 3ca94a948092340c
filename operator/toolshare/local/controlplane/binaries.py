"""Find or build the control-plane binaries.

Order of preference, as envtest does it:
1. `KUBEBUILDER_ASSETS`, if it names a directory holding every binary;
2. the cache, `~/.cache/toolshare/controlplane/<key>/` (or `$TOOLSHARE_CACHE_DIR`), keyed by the pinned
   Kubernetes and etcd versions and a hash of tools/controlplane/go.{mod,sum};
3. a build from the pinned Go module into that cache, once.

A build goes into a temporary directory that is renamed into place only after every binary has been
built and has answered a version query, so an interrupted build never leaves something that counts as cached.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl",
            "kube-scheduler", "kubelet", "kube-proxy")  # the last three: the node (local/node)

# Go package that builds each binary. etcd's main package is the root of its server module.
PACKAGES = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "kubelet": "k8s.io/kubernetes/cmd/kubelet",
    "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
    "etcd": "go.etcd.io/etcd/server/v3",
}

# How each binary is asked for its version: a smoke test before a build counts as cached.
VERSION_ARGS = {
    "kube-apiserver": ["--version"],
    "kube-controller-manager": ["--version"],
    "kubectl": ["version", "--client"],
    "kube-scheduler": ["--version"],
    "kubelet": ["--version"],
    "kube-proxy": ["--version"],
    "etcd": ["--version"],
}


class BinariesUnavailable(RuntimeError):
    """The binaries are neither provided nor buildable; the message says what to do instead."""


def source_dir() -> Path:
    """tools/controlplane of this checkout (or `$TOOLSHARE_CONTROLPLANE_MODULE`)."""
    env = os.environ.get("TOOLSHARE_CONTROLPLANE_MODULE")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "tools" / "controlplane" / "go.mod"
        if candidate.exists():
            return candidate.parent
    raise BinariesUnavailable(
        "tools/controlplane/go.mod was not found next to this installation of toolshare; "
        "set TOOLSHARE_CONTROLPLANE_MODULE, set KUBEBUILDER_ASSETS to a directory with "
        f"{', '.join(BINARIES)}, or point the tests at an existing cluster with TOOLSHARE_KUBECONFIG."
    )


def pinned_versions(module_dir: Path) -> dict[str, str]:
    """The Kubernetes and etcd versions required by the pinned module."""
    text = (module_dir / "go.mod").read_text()
    found = {}
    for name, path in (("kubernetes", "k8s.io/kubernetes"), ("etcd", "go.etcd.io/etcd/server/v3")):
        m = re.search(rf"^\s*{re.escape(path)}\s+(v\S+)", text, re.MULTILINE)
        if not m:
            raise BinariesUnavailable(f"{module_dir}/go.mod does not require {path}")
        found[name] = m.group(1)
    return found


def cache_base() -> Path:
    """~/.cache/toolshare (or $TOOLSHARE_CACHE_DIR): one subdirectory per tools/<name> module."""
    base = os.environ.get("TOOLSHARE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "toolshare"
    )
    return Path(base)


def cache_root() -> Path:
    return cache_base() / "controlplane"


def module_suffix(module_dir: Path) -> str:
    """The platform and a hash of go.mod and go.sum: the part of a cache key every module shares."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((module_dir / name).read_bytes())
    return f"{sys.platform}-{platform.machine()}_{digest.hexdigest()[:12]}"


def cache_key(module_dir: Path) -> str:
    v = pinned_versions(module_dir)
    return f"k8s-{v['kubernetes']}_etcd-{v['etcd']}_{module_suffix(module_dir)}"


@dataclass(frozen=True)
class Binaries:
    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name


def _complete(directory: Path, names=BINARIES) -> bool:
    return all(os.access(directory / b, os.X_OK) for b in names)


def _ldflags(version: str) -> str:
    """Stamp the Kubernetes version as its release build does, so servers and kubectl report it."""
    m = re.match(r"v(\d+)\.(\d+)", version)
    major, minor = (m.group(1), m.group(2)) if m else ("1", "0")
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(["-s", "-w"] + flags)


_ALTERNATIVES = (f"set KUBEBUILDER_ASSETS to a directory holding {', '.join(BINARIES)}, or point "
                 "the tests at an existing cluster with TOOLSHARE_KUBECONFIG")


def build(module_dir: Path, target: Path, log=print, packages: dict[str, str] | None = None,
          version_args: dict[str, list[str]] | None = None, ldflags: str | None = None,
          alternatives: str = _ALTERNATIVES, cgo: bool = True) -> None:
    """Build every binary from the pinned module into `target`, atomically.

    The defaults build the control plane; other tools/<name> modules pass their own packages,
    version queries, ldflags and alternatives (see toolshare.local.oauth2proxy).
    """
    names = tuple(packages) if packages else BINARIES
    packages = packages or PACKAGES
    version_args = version_args or VERSION_ARGS
    go = shutil.which("go")
    if go is None:
        raise BinariesUnavailable(
            f"Go is not installed, so {', '.join(names)} cannot be built. Install Go "
            f"(1.26 or newer), or {alternatives}."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f"{target.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent builders wait for the first one
        if _complete(target, names):
            return
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        try:
            if ldflags is None:
                version = pinned_versions(module_dir)["kubernetes"]
                ldflags = _ldflags(version)
                log(f"building {', '.join(names)} (Kubernetes {version}) from {module_dir}; "
                    "the first build takes several minutes")
            else:
                log(f"building {', '.join(names)} from {module_dir}; the first build takes minutes")
            env = {**os.environ, "GOFLAGS": "-mod=readonly", **({} if cgo else {"CGO_ENABLED": "0"})}
            started = time.monotonic()
            for name in names:
                cmd = [go, "build", "-trimpath", "-ldflags", ldflags,
                       "-o", str(staging / name), packages[name]]
                proc = subprocess.run(cmd, cwd=module_dir, env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise BinariesUnavailable(
                        f"building {name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}\n"
                        f"Alternatives: {alternatives}."
                    )
                check = subprocess.run([str(staging / name), *version_args[name]], capture_output=True,
                                       text=True, timeout=60)
                if check.returncode != 0:
                    raise BinariesUnavailable(f"the freshly built {name} does not run: {check.stderr[-2000:]}")
                log(f"  built {name} ({(staging / name).stat().st_size // 2**20} MiB, "
                    f"{time.monotonic() - started:.0f}s so far)")
            if target.exists():
                shutil.rmtree(target)
            os.rename(staging, target)  # atomic: the cache entry appears whole or not at all
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def ensure_binaries(log=print) -> Binaries:
    """Return a directory holding every control-plane binary, building it if needed."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        directory = Path(assets)
        if not _complete(directory):
            missing = [b for b in BINARIES if not os.access(directory / b, os.X_OK)]
            raise BinariesUnavailable(
                f"KUBEBUILDER_ASSETS={assets} lacks {', '.join(missing)}; unset it to build them "
                "from tools/controlplane, or add them there."
            )
        return Binaries(directory)
    module_dir = source_dir()
    target = cache_root() / cache_key(module_dir)
    if not _complete(target):
        build(module_dir, target, log=log)
    return Binaries(target)


@dataclass(frozen=True)
class GoTool:
    """A single binary built from its own pinned module, tools/<name>/go.mod (oauth2-proxy, helm).

    Cached under ~/.cache/toolshare/<name>/<version>_<platform>_<go.mod+go.sum hash>/ by `build`,
    so the cache and atomicity rules are the control plane's. `override_env` names a variable that
    may point at a binary built elsewhere.
    """

    name: str
    module: str  # the module whose required version keys the cache and is stamped into the binary
    package: str  # the main package to build
    version_args: tuple[str, ...]
    ldflags: str  # format string; {version} is the pinned version
    override_env: str
    alternatives: str
    also: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # more (binary, package, version args)
    cgo: bool = True  # False: CGO_ENABLED=0, a static binary (containerd, kube-router)

    def module_dir(self) -> Path:
        for parent in Path(__file__).resolve().parents:
            candidate = parent / "tools" / self.name / "go.mod"
            if candidate.exists():
                return candidate.parent
        raise BinariesUnavailable(f"tools/{self.name}/go.mod was not found; {self.alternatives}")

    def pinned_version(self, directory: Path) -> str:
        text = (directory / "go.mod").read_text()
        m = re.search(rf"^\s*{re.escape(self.module)}\s+(v\S+)", text, re.MULTILINE)
        if not m:
            raise BinariesUnavailable(f"{directory}/go.mod does not require {self.module}")
        return m.group(1)

    def cache_key(self, directory: Path) -> str:
        return f"{self.pinned_version(directory)}_{module_suffix(directory)}"

    def cached(self) -> Path | None:
        """The binary if it is already built (or overridden), never building it."""
        override = os.environ.get(self.override_env)
        if override:
            return Path(override)
        target = cache_base() / self.name / self.cache_key(self.module_dir())
        return target / self.name if _complete(target, (self.name,)) else None

    def ensure(self, log=print) -> Path:
        """Path to the binary: $<override_env>, the cache, or a fresh build into the cache."""
        override = os.environ.get(self.override_env)
        if override:
            if not os.access(override, os.X_OK):
                raise BinariesUnavailable(f"{self.override_env}={override} is not executable")
            return Path(override)
        directory = self.module_dir()
        target = cache_base() / self.name / self.cache_key(directory)
        packages = {self.name: self.package, **{name: pkg for name, pkg, _ in self.also}}
        if not _complete(target, tuple(packages)):
            build(directory, target, log=log, packages=packages,
                  version_args={self.name: list(self.version_args),
                                **{name: list(args) for name, _, args in self.also}},
                  ldflags=self.ldflags.format(version=self.pinned_version(directory)),
                  alternatives=self.alternatives, cgo=self.cgo)
        return target / self.name
