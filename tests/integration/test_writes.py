"""Write budget, counted by the API server itself (the kubelet's and scheduler's writes left out:
tests/support/metrics.py): nothing on idle or restart, little per share change."""

from __future__ import annotations

import time

import kubernetes
import pytest

from tests.support import metrics
from tests.support.expected import converged
from tests.support.metrics import delta
from tests.support.objects import GROUP, VERSION, Toolshare, runshare, toolrun
from tests.support.wait import wait_for
from toolshare.local.images import catalog

OURS = {"pods", "services", "ingresses", "networkpolicies", "toolruns", "runshares", "events"}
N_RUNS = 20


def settled(ts, quiet: float = 3.0):
    return metrics.settled(ts.api.api_client, OURS, ts.ns, quiet=quiet)


def reconciles(operator, kind: str) -> float:
    return metrics.reconciles(operator.metrics(), kind)


def other_test_namespaces_gone(cluster, namespace):
    core = kubernetes.client.CoreV1Api(cluster.client())
    items = core.list_namespace(label_selector="toolshare.dev/test=true").items
    return all(ns.metadata.name == namespace for ns in items)


@pytest.fixture
def ts(cluster, namespace, operator):
    wait_for(lambda: other_test_namespaces_gone(cluster, namespace), timeout=120,
             what="earlier test namespaces to finish terminating (their deletions are writes too)")
    return Toolshare(cluster.client(), namespace)


def serving(name: str, labels: dict) -> dict:
    """A run whose tool really serves its endpoint on the node, so once Ready its Pod is still:
    a tool that cannot start keeps the kubelet writing (back-off events, Pod status), and those
    writes would be counted with the operator's."""
    run = toolrun(name, labels=labels, endpoints=[{"name": "lab", "port": 8888, "protocol": "http"}])
    run["spec"].update(image=catalog.PYTHON, command=["python3", "-m", "http.server", "8888"])
    return run


def tools_ready(ts) -> bool:
    return all(any(c["type"] == "ToolReady" and c["status"] == "True"
                   for c in (r.get("status") or {}).get("conditions") or [])
               for r in ts.api.list_namespaced_custom_object(GROUP, VERSION, ts.ns, "toolruns")["items"])


def test_idle_restart_and_share_change_write_budget(ts, cluster, operator):
    for i in range(N_RUNS):
        ts.create(serving(f"run-{i}", labels={"formation": "a" if i % 2 else "b"}))
    ts.create(runshare("to-bob", run="run-0", users=["bob"]))
    ts.create(runshare("formation-a", selector={"matchLabels": {"formation": "a"}}, groups=["lab"]))
    wait_for(lambda: ts.annotations("run-0").get("lab", {}).get("toolshare.dev/allowed-users") == "bob",
             what="run-0 shared")
    for i in range(1, N_RUNS, 2):
        wait_for(lambda: ts.annotations(f"run-{i}").get("lab", {}).get("toolshare.dev/allowed-groups") == "lab",
                 what=f"run-{i} shared with lab")
    # Idle means every write done: every status, and the Shared events (posted after the shares'
    # statuses, while their runs are reconciled), not merely a quiet spell.
    wait_for(lambda: tools_ready(ts), timeout=300, what="every run's tool serving on the node")
    converged(cluster.client(), ts.ns)
    for i in (0, *range(1, N_RUNS, 2)):
        wait_for(lambda: any(r == "Shared" for r, _ in ts.events(f"run-{i}")), what=f"Shared event on run-{i}")
    before = settled(ts)

    time.sleep(5)
    assert delta(metrics.write_counts(ts.api.api_client, OURS, ts.ns), before) == {}, "an idle operator wrote something"

    operator.restart()
    # The restarted operator reconciles every run and share it lists; count its writes after that.
    wait_for(lambda: reconciles(operator, "ToolRun") >= N_RUNS and reconciles(operator, "RunShare") >= 2,
             timeout=120, what="the restarted operator to reconcile every run and share")
    after_restart = settled(ts, quiet=5.0)
    assert delta(after_restart, before) == {}, f"restart with {N_RUNS} unchanged runs wrote: {delta(after_restart, before)}"
    assert "Traceback" not in operator.log_tail(20000)

    # One share change on one single-endpoint run: one Ingress write plus one status write, the
    # run's (sharedWith); the share's verdict is unchanged, so its status is not written.
    ts.patch("runshares", "to-bob", {"spec": {"users": ["bob", "carol"]}})
    wait_for(lambda: ts.annotations("run-0")["lab"]["toolshare.dev/allowed-users"] == "bob,carol", what="carol added")
    converged(cluster.client(), ts.ns)  # the run's status is written after its Ingress
    change = delta(settled(ts), after_restart)
    assert change.pop(("APPLY", "ingresses", ""), 0) == 1
    assert change.pop(("PATCH", "runshares", ""), 0) == 1  # the test's own spec change
    assert change == {("PATCH", "toolruns", "status"): 1}, change


def test_a_run_exposing_nothing_is_not_rewritten(ts, cluster, operator):
    """An SSH-only run's NetworkPolicy has no rule; the API server stores that without an `ingress`
    list, and a reconcile must see it as unchanged (it used to re-apply it every time)."""
    ts.create(toolrun("ssh-only", endpoints=[{"name": "ssh", "port": 22, "protocol": "ssh"}]))
    wait_for(lambda: (ts.condition("toolruns", "ssh-only") or {}).get("status") == "True", what="run Ready")
    before, done = settled(ts), reconciles(operator, "ToolRun")
    ts.patch("toolruns", "ssh-only", {"metadata": {"labels": {"touched": "yes"}}})  # an event, nothing to render
    wait_for(lambda: reconciles(operator, "ToolRun") > done, what="the operator to reconcile the relabelled run")
    change = delta(settled(ts), before)
    assert change.pop(("PATCH", "toolruns", ""), 0) == 1  # the test's own
    assert change == {}, f"re-reconciling an unchanged SSH-only run wrote {change}"
