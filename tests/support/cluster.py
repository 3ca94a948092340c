"""Which Kubernetes the integration tests run against, and clients acting as each test identity.

By default a local control plane is started once per test session (the binaries are built if
missing). With TOOLSHARE_KUBECONFIG the tests use that cluster instead; a guard refuses a context
that does not look disposable unless TOOLSHARE_ALLOW_ANY_CLUSTER=1. On such a cluster the test
identities come from TOOLSHARE_USERS_DIR (alice.kubeconfig, bob.kubeconfig, carol.kubeconfig).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import kubernetes
import yaml

DISPOSABLE_CONTEXT = re.compile(r"^(kind-|k3d-|minikube|toolshare-local|docker-desktop|rancher-desktop|envtest)")
USERS = ("alice", "bob", "carol")


class NotDisposable(RuntimeError):
    pass


def check_disposable(kubeconfig: Path) -> str:
    config = yaml.safe_load(kubeconfig.read_text())
    context = config.get("current-context", "")
    if not DISPOSABLE_CONTEXT.match(context) and os.environ.get("TOOLSHARE_ALLOW_ANY_CLUSTER") != "1":
        raise NotDisposable(
            f"refusing to run integration tests against context {context!r} from {kubeconfig}: it does "
            "not look like a disposable test cluster (kind-*, k3d-*, minikube, ...). The tests create "
            "and delete namespaces and cluster-scoped objects. Set TOOLSHARE_ALLOW_ANY_CLUSTER=1 to "
            "allow it anyway."
        )
    return context


@dataclass
class TestCluster:
    admin_kubeconfig: Path
    users_dir: Path | None
    local_dir: Path | None = None  # set when the tests started the control plane themselves
    _clients: dict = field(default_factory=dict)

    def kubeconfig(self, user: str = "admin") -> Path:
        if user == "admin":
            return self.admin_kubeconfig
        if self.users_dir is None:
            raise RuntimeError(
                f"no kubeconfig for test identity {user!r}: set TOOLSHARE_USERS_DIR to a directory "
                f"holding {user}.kubeconfig when testing against an existing cluster"
            )
        return self.users_dir / f"{user}.kubeconfig"

    def client(self, user: str = "admin") -> kubernetes.client.ApiClient:
        if user not in self._clients:
            self._clients[user] = kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig(user)))
        return self._clients[user]

    def webhook_env(self) -> dict[str, str]:
        """How an operator serving this cluster's admission webhooks authenticates the API server:
        the local control plane's client CA; on another cluster, what the environment says."""
        if self.local_dir is None:
            return {}
        from toolshare.local.controlplane import cluster

        return cluster.webhook_client_env(self.local_dir)

    def env(self, user: str = "admin") -> dict[str, str]:
        """Environment for a subprocess (kubectl, the operator) acting as `user`."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig(user))}


def start() -> TestCluster:
    external = os.environ.get("TOOLSHARE_KUBECONFIG")
    if external:
        path = Path(external).resolve()
        check_disposable(path)
        users = os.environ.get("TOOLSHARE_USERS_DIR")
        return TestCluster(path, Path(users).resolve() if users else None)
    from toolshare.local.controlplane import cluster

    directory = Path(os.environ.get("TOOLSHARE_TEST_CLUSTER_DIR") or tempfile.mkdtemp(prefix="toolshare-test-"))
    cluster.up(directory, node=True)  # tools run as Pods: the wire-level tests need them
    return TestCluster(directory / "kubeconfig", directory, local_dir=directory)


def stop(tc: TestCluster) -> None:
    for c in tc._clients.values():
        c.close()
    if tc.local_dir is not None:
        from toolshare.local.controlplane import cluster

        from toolshare.local.controlplane import node

        had_node = node.Paths.of(tc.local_dir).root.exists()
        cluster.down(tc.local_dir)
        if had_node:  # the machine-wide state is this cluster's to have taken away
            left = node.leftovers(tc.local_dir)
            assert not left, f"`cluster down` left on the machine: {left}"
