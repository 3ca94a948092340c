"""`toolshare share|unshare|list` and `kubectl toolshare ...`, run as alice and bob with their kubeconfigs.

The commands write ordinary RunShares by server-side apply; the gate's answers prove they took effect.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kubernetes

from tests.support.auth import matrix
from tests.support.objects import Toolshare, toolrun
from tests.support.wait import wait_for
from toolshare.local.controlplane.binaries import ensure_binaries

OWNER_ONLY = (202, 403, 403, 403, 401)
SHARED = (202, 202, 202, 403, 401)
BIN = Path(sys.executable).parent


def _grant(cluster, namespace: str) -> None:
    """alice may manage RunShares here, bob may read them (what a namespace admin would grant)."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.client())
    for name, verbs, user in (("share-runs", ["get", "list", "watch", "create", "patch", "update", "delete"], "alice"),
                              ("read-shares", ["get", "list"], "bob")):
        rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": [
            {"apiGroups": ["toolshare.dev"], "resources": ["runshares"], "verbs": verbs}]})
        rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]})


def _run(cluster, user: str, *argv: str, kubectl: bool = False) -> subprocess.CompletedProcess:
    env = {**cluster.env(user), "PATH": f"{BIN}:{ensure_binaries().directory}:{os.environ['PATH']}"}
    cmd = ["kubectl", "toolshare", *argv] if kubectl else [str(BIN / "toolshare"), *argv]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def test_share_unshare_and_list_from_the_command_line(operator, gate, issuer, cluster, namespace):
    ts = Toolshare(cluster.client(), namespace)
    ts.create(toolrun("nb", endpoints=[{"name": "lab", "port": 8888, "protocol": "http"},
                                       {"name": "api", "port": 9000, "protocol": "http", "path": "/api"}]))
    wait_for(lambda: len(ts.ingresses("nb")) == 2, what="the run's Ingresses")
    _grant(cluster, namespace)

    def settle(endpoint, expected):
        wait_for(lambda: matrix(gate.url, issuer, namespace, "nb", endpoint) == expected,
                 what=f"{expected} on {endpoint}")

    out = _run(cluster, "alice", "share", "nb", "--user", "bob", "--group", "guests", "-n", namespace, kubectl=True)
    assert out.returncode == 0, out.stderr
    assert f"runshare/nb-share applied in {namespace}: bob, group:guests" in out.stdout
    settle("lab", SHARED)
    share = ts.get("runshares", "nb-share")
    assert {(m["manager"], m["operation"]) for m in share["metadata"]["managedFields"]} >= {("kubectl-toolshare", "Apply")}
    assert share["metadata"]["annotations"]["toolshare.dev/shared-by"] == "alice"

    listing = _run(cluster, "alice", "list", "-n", namespace)
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if line.startswith("nb-share"))
    assert row.split()[:6] == ["nb-share", "nb", "bob", "guests", "all", "never"]
    mine = _run(cluster, "bob", "list", "--shared-with-me", "-n", namespace)
    assert mine.returncode == 0, mine.stderr
    assert any(line.split()[:3] == [namespace, "nb-share", "nb"] for line in mine.stdout.splitlines())

    out = _run(cluster, "alice", "unshare", "nb", "--user", "bob", "-n", namespace)
    assert out.returncode == 0 and "runshare/nb-share updated" in out.stdout, out.stderr
    settle("lab", (202, 403, 202, 403, 401))

    out = _run(cluster, "alice", "share", "nb", "--user", "bob", "--endpoint", "api", "--expires", "2h", "-n", namespace)
    assert out.returncode == 0, out.stderr
    settle("api", SHARED)  # carol still through the first share (all endpoints), bob through the api one
    assert matrix(gate.url, issuer, namespace, "nb", "lab") == (202, 403, 202, 403, 401)
    assert " until " in out.stdout

    out = _run(cluster, "alice", "unshare", "nb", "-n", namespace)
    assert out.returncode == 0 and out.stdout.count("deleted") == 2, out.stdout + out.stderr
    settle("lab", OWNER_ONLY)
    settle("api", OWNER_ONLY)


def test_bad_input_and_refusals_are_clear(operator, cluster, namespace):
    bad = _run(cluster, "alice", "share", "nb", "--user", "bob smith", "-n", namespace)
    assert bad.returncode == 2 and "--user 'bob smith'" in bad.stderr
    bad = _run(cluster, "alice", "share", "nb", "--user", "bob", "--expires", "yesterday", "-n", namespace)
    assert bad.returncode == 2 and "--expires 'yesterday'" in bad.stderr
    bad = _run(cluster, "alice", "share", "nb", "-n", namespace)
    assert bad.returncode == 2 and "--user or --group" in bad.stderr
    refused = _run(cluster, "bob", "share", "nb", "--user", "dave", "-n", namespace)
    assert refused.returncode == 1 and "refused" in refused.stderr
