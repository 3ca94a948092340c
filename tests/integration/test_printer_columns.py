"""The printer columns as `kubectl get` prints them, from the real API server's table convertor.

The pinned apiextensions-apiserver (v0.36.3, tableconvertor.go) evaluates a column's jsonPath
and keeps only the first value it finds: `.spec.users[*]` would print `bob` for [bob, carol],
hiding carol, and a whole list prints as JSON (`["bob","carol"]`). So a RunShare's USERS and
GROUPS columns read annotations that the toolshare.dev-principals MutatingAdmissionPolicy joins
in the API server on every write (no webhook call, no extra write); the ToolRun's SHARED-WITH
column is the joined summary the operator writes into status.sharedWith.
"""

from __future__ import annotations

import subprocess

from tests.support.objects import Toolshare, runshare, toolrun
from tests.support.wait import wait_for
from toolshare.local.controlplane.binaries import ensure_binaries


def kubectl_get(cluster, namespace: str, *args: str) -> list[dict[str, str]]:
    """`kubectl get ...` as rows of {COLUMN: cell}, split by the header's column starts."""
    out = subprocess.run([str(ensure_binaries().path("kubectl")), "--kubeconfig", str(cluster.kubeconfig()),
                          "get", "-n", namespace, *args], capture_output=True, text=True, timeout=60, check=True)
    header, *lines = out.stdout.splitlines()
    names = header.split()
    starts = [header.index(n) for n in names]
    ends = starts[1:] + [None]
    return [{n: line[s:e].strip() for n, s, e in zip(names, starts, ends)} for line in lines]


def test_runshare_columns_show_every_principal_joined(operator, cluster, namespace):
    ts = Toolshare(cluster.client(), namespace)  # the operator fixture waited for the policy (install.py)
    ts.create(toolrun("nb"))
    ts.create(runshare("team", run="nb", users=["carol", "bob"], groups=["lab", "guests"]))
    ts.create(runshare("one", run="nb", users=["dave"]))
    wait_for(lambda: (ts.condition("runshares", "team") or {}).get("status") == "True", what="share Ready")

    rows = {r["NAME"]: r for r in kubectl_get(cluster, namespace, "runshares")}
    assert rows["team"]["USERS"] == "carol, bob"  # every user, in the spec's order
    assert rows["team"]["GROUPS"] == "lab, guests"
    assert rows["one"]["USERS"] == "dave" and rows["one"]["GROUPS"] == ""
    assert rows["team"]["RUN"] == "nb" and rows["team"]["READY"] == "True"
    # A change of principals shows at once (the same write), and a forged annotation does not stay.
    ts.patch("runshares", "one", {"spec": {"users": ["dave", "erin"]},
                                  "metadata": {"annotations": {"toolshare.dev/users": "nobody"}}})
    assert {r["NAME"]: r for r in kubectl_get(cluster, namespace, "runshares")}["one"]["USERS"] == "dave, erin"

    wait_for(lambda: kubectl_get(cluster, namespace, "toolruns")[0]["SHARED-WITH"]
             == "bob, carol, dave, erin, group:guests, group:lab", what="the run's joined SHARED-WITH")
    # TOOL is the ToolReady condition's reason: the tool's own state, whichever it is here (it may
    # move on between the two reads while the Pod starts, hence the wait).
    def tool_column_is_the_reason():
        row = kubectl_get(cluster, namespace, "toolruns")[0]
        reason = (ts.condition("toolruns", "nb", "ToolReady") or {}).get("reason")
        return row["READY"] == "True" and bool(reason) and row["TOOL"] == reason

    wait_for(tool_column_is_the_reason, what="TOOL showing the ToolReady reason")
