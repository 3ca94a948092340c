"""What `toolshare` / `kubectl toolshare` answer a newcomer, against the real API server and gate:
every refusal is one line naming what was refused and the API server's reason (exit 1); the
namespace is the kubeconfig context's, else "default", as kubectl; a share of a run that does not
exist says so; and `list --shared-with-me` comes from the gate, whatever the caller may read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.auth import matrix
from tests.support.objects import Toolshare, runshare, toolrun
from tests.support.rbac import bind_edit
from tests.support.wait import wait_for
from toolshare.local.controlplane.binaries import ensure_binaries

BIN = Path(sys.executable).parent
CLI_ENV = ("TOOLSHARE_GATE_PUBLIC_URL", "TOOLSHARE_TOKEN")  # never inherited from the caller's shell


def cli(cluster, user: str, *argv: str, kubeconfig: Path | None = None, kubectl: bool = False,
        **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in cluster.env(user).items() if k not in CLI_ENV}
    if kubeconfig is not None:
        base["KUBECONFIG"] = str(kubeconfig)
    base["PATH"] = f"{BIN}:{ensure_binaries().directory}:{os.environ['PATH']}"
    cmd = ["kubectl", "toolshare", *argv] if kubectl else [str(BIN / "toolshare"), *argv]
    return subprocess.run(cmd, env={**base, **env}, capture_output=True, text=True, timeout=60)


def one_line_refusal(out: subprocess.CompletedProcess, command: str) -> str:
    assert out.returncode == 1, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"toolshare {command}: "), out.stderr
    assert "Traceback" not in out.stderr and '"kind":"Status"' not in out.stderr, out.stderr
    return lines[0]


def with_namespace(cluster, user: str, namespace: str | None, path: Path) -> Path:
    """A copy of the user's kubeconfig whose current context names `namespace` (or none)."""
    config = yaml.safe_load(cluster.kubeconfig(user).read_text())
    for ctx in config["contexts"]:
        ctx["context"].pop("namespace", None)
        if namespace:
            ctx["context"]["namespace"] = namespace
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def test_refusals_are_one_line_with_the_api_servers_reason(operator, cluster, namespace):
    ts = Toolshare(cluster.client(), namespace)
    ts.create(toolrun("carols", owner="carol"))  # an administrator may launch for someone else
    ts.create(toolrun("alices", owner="alice"))
    bind_edit(cluster, namespace, users=["alice"])

    # RBAC: bob may not even read RunShares here.
    line = one_line_refusal(cli(cluster, "bob", "share", "alices", "--user", "dave", "-n", namespace), "share")
    assert f"refused to read RunShare {namespace}/alices-share" in line
    assert 'User "bob" cannot get resource "runshares"' in line

    # Admission: alice may write RunShares, but not share carol's run. The webhook decides from the
    # operator's cache: wait until the operator has seen carols (its status written).
    wait_for(lambda: (ts.condition("toolruns", "carols") or {}).get("status") == "True", what="carols Ready")
    line = one_line_refusal(cli(cluster, "alice", "share", "carols", "--user", "bob", "-n", namespace,
                                kubectl=True), "share")
    assert f"refused to apply RunShare {namespace}/carols-share" in line
    assert "denied the request" in line and "owned by 'carol'" in line
    assert ts.get("runshares", "carols-share") is None

    # Listing and unsharing where one may not read.
    line = one_line_refusal(cli(cluster, "carol", "list", "-n", namespace), "list")
    assert f"refused to list RunShares in namespace {namespace}" in line and 'User "carol"' in line
    line = one_line_refusal(cli(cluster, "carol", "unshare", "alices", "-n", namespace), "unshare")
    assert 'User "carol" cannot list resource "runshares"' in line

    # Deleting a share one may not delete.
    assert cli(cluster, "alice", "share", "alices", "--user", "bob", "-n", namespace).returncode == 0
    line = one_line_refusal(cli(cluster, "bob", "unshare", "--name", "alices-share", "-n", namespace), "unshare")
    assert f"refused to delete RunShare {namespace}/alices-share" in line


def test_an_unreachable_api_server_or_a_missing_kubeconfig_is_one_line(cluster, tmp_path):
    config = yaml.safe_load(cluster.kubeconfig("alice").read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"  # nothing listens there
    (tmp_path / "away").write_text(yaml.safe_dump(config))
    line = one_line_refusal(cli(cluster, "alice", "list", "-n", "x", kubeconfig=tmp_path / "away"), "list")
    assert "cannot reach the API server" in line
    line = one_line_refusal(cli(cluster, "alice", "list", kubeconfig=tmp_path / "missing"), "list")
    assert "kubeconfig" in line and str(tmp_path / "missing") in line


def test_the_namespace_is_the_contexts_else_default(operator, cluster, namespace, tmp_path):
    ts = Toolshare(cluster.client(), namespace)
    ts.create(toolrun("nb"))
    bind_edit(cluster, namespace, users=["alice"])

    in_context = with_namespace(cluster, "alice", namespace, tmp_path / "alice-in-ns")
    out = cli(cluster, "alice", "share", "nb", "--user", "bob", kubeconfig=in_context)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"runshare/nb-share applied in {namespace}: bob" and not out.stderr
    assert ts.get("runshares", "nb-share")["spec"]["users"] == ["bob"]
    out = cli(cluster, "alice", "share", "nb", "--user", "carol", kubeconfig=in_context, kubectl=True)
    assert out.returncode == 0 and f"applied in {namespace}: bob, carol" in out.stdout, out.stderr

    # No namespace in the context: "default", where alice has no rights.
    nowhere = with_namespace(cluster, "alice", None, tmp_path / "alice-no-ns")
    line = one_line_refusal(cli(cluster, "alice", "share", "nb", "--user", "bob", kubeconfig=nowhere), "share")
    assert 'in the namespace "default"' in line
    # -n wins over the context.
    out = cli(cluster, "alice", "list", "-n", namespace, kubeconfig=nowhere)
    assert out.returncode == 0 and "nb-share" in out.stdout, out.stderr


def test_sharing_a_run_that_does_not_exist_warns(operator, cluster, namespace):
    ts = Toolshare(cluster.client(), namespace)
    bind_edit(cluster, namespace, users=["alice"])
    out = cli(cluster, "alice", "share", "notebok", "--user", "bob", "-n", namespace)
    assert out.returncode == 0, out.stderr
    assert "applied in" not in out.stdout
    assert (f"warning: there is no ToolRun 'notebok' in namespace '{namespace}'" in out.stderr
            and "RunNotFound" in out.stderr), out.stderr
    wait_for(lambda: (ts.condition("runshares", "notebok-share") or {}).get("reason") == "RunNotFound",
             what="the share's RunNotFound")
    # Once the run exists, sharing it again says applied, and no warning.
    ts.create(toolrun("notebok"))
    out = cli(cluster, "alice", "share", "notebok", "--user", "carol", "-n", namespace)
    assert out.returncode == 0 and not out.stderr and "applied in" in out.stdout, out.stderr


def test_shared_with_me_comes_from_the_gate(operator, gate, issuer, cluster, namespace, tmp_path):
    """bob may read nothing in the namespace; the gate still lists what is shared with him."""
    ts = Toolshare(cluster.client(), namespace)
    ts.create(toolrun("nb", endpoints=[{"name": "lab", "port": 8888, "protocol": "http", "path": "/lab"}]))
    ts.create(runshare("to-bob", run="nb", users=["bob"]))
    ts.create(runshare("to-guests", run="nb", groups=["guests"], expires_at="2099-01-01T00:00:00Z"))

    def listing(user: str, **env):
        out = cli(cluster, user, "list", "--shared-with-me", "--gate", gate.url,
                  TOOLSHARE_TOKEN=issuer.token(user), **env)
        assert out.returncode == 0, out.stderr
        return [line.split() for line in out.stdout.splitlines()]

    # The listings are the gate's: wait until it holds both shares (it lets bob and carol in).
    wait_for(lambda: matrix(gate.url, issuer, namespace, "nb", "lab", ("bob", "carol")) == (202, 202),
             what="both shares known to the gate")
    rows = [r for r in listing("bob") if r[:1] == [namespace]]
    assert listing("bob")[0] == ["NAMESPACE", "NAME", "RUN", "OWNER", "VIA", "SHARED-BY", "EXPIRES", "URL"]
    assert [r[:7] for r in rows] == [[namespace, "to-bob", "nb", "alice", "user", "admin", "never"]]
    assert rows[0][7].startswith("http://") and rows[0][7].endswith(".toolshare.localhost/lab")
    carol = [r for r in listing("carol") if r[:1] == [namespace]]
    assert [r[:7] for r in carol] == [[namespace, "to-guests", "nb", "alice", "group:guests", "admin",
                                       "2099-01-01T00:00:00Z"]]
    assert [r for r in listing("dave") if r[:1] == [namespace]] == []

    # The gate's URL from the environment, or from access/urls.json next to the kubeconfig
    # (what `make run` writes); the token is $TOOLSHARE_TOKEN.
    out = cli(cluster, "bob", "list", "--shared-with-me", TOOLSHARE_GATE_PUBLIC_URL=gate.url,
              TOOLSHARE_TOKEN=issuer.token("bob"))
    # Rows by their cells: the columns are as wide as the longest namespace listed, and other
    # tests' namespaces (shared with bob too) may still be there.
    assert out.returncode == 0, out.stderr
    assert [namespace, "to-bob"] in [r.split()[:2] for r in out.stdout.splitlines()]
    (tmp_path / "access").mkdir()
    (tmp_path / "access" / "urls.json").write_text(json.dumps({"gate": gate.url}))
    bob_config = tmp_path / "bob.kubeconfig"
    bob_config.write_text(cluster.kubeconfig("bob").read_text())
    out = cli(cluster, "bob", "list", "--shared-with-me", kubeconfig=bob_config, kubectl=True,
              TOOLSHARE_TOKEN=issuer.token("bob"))
    assert out.returncode == 0, out.stderr
    assert [namespace, "to-bob"] in [r.split()[:2] for r in out.stdout.splitlines()]

    # Without a token, or with one the gate does not accept: one line each.
    out = cli(cluster, "bob", "list", "--shared-with-me", kubeconfig=bob_config)
    assert out.returncode == 2 and "$TOOLSHARE_TOKEN" in out.stderr and "toolshare dev token bob" in out.stderr
    line = one_line_refusal(cli(cluster, "bob", "list", "--shared-with-me", "--gate", gate.url,
                                TOOLSHARE_TOKEN=issuer.token("bob", ttl=-60)), "list")
    assert f"the gate at {gate.url} (from --gate) refused" in line and "(401)" in line
    line = one_line_refusal(cli(cluster, "bob", "list", "--shared-with-me", "--gate", "http://127.0.0.1:9",
                                TOOLSHARE_TOKEN=issuer.token("bob")), "list")
    assert "cannot reach the gate at http://127.0.0.1:9" in line
