"""ToolRun + RunShare reconciliation on the real control plane, with the operator as its own process."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.support.expected import converged
from tests.support.objects import Toolshare, runshare, toolrun
from tests.support.wait import wait_for

SHARED_WITH = ("toolshare.dev/allowed-users", "toolshare.dev/allowed-groups")


@pytest.fixture
def ts(cluster, namespace, operator):
    return Toolshare(cluster.client(), namespace)


def ready(ts, plural, name):
    cond = ts.condition(plural, name)
    return cond if cond and cond["status"] == "True" else None


def allowed(ts, run, endpoint="lab"):
    ann = ts.annotations(run).get(endpoint)
    return None if ann is None else (ann.get(SHARED_WITH[0], ""), ann.get(SHARED_WITH[1], ""))


def test_run_gets_its_children_and_never_exposes_ssh(ts, namespace):
    ts.create(toolrun("nb", endpoints=[
        {"name": "lab", "port": 8888, "protocol": "http", "path": "/lab"},
        {"name": "api", "port": 8443, "protocol": "https"},
        {"name": "ssh", "port": 22, "protocol": "ssh"},
    ]))
    wait_for(lambda: ready(ts, "toolruns", "nb"), what="ToolRun Ready")
    run = ts.get("toolruns", "nb")
    uid = run["metadata"]["uid"]
    svc = ts.core.read_namespaced_service("nb", namespace)
    assert sorted((p.name, p.port) for p in svc.spec.ports) == [("api", 8443), ("lab", 8888)]
    pod = ts.core.read_namespaced_pod("nb", namespace)
    assert pod.metadata.owner_references[0].uid == uid
    assert sorted(p.container_port for p in pod.spec.containers[0].ports) == [22, 8443, 8888]
    ingresses = ts.ingresses("nb")
    assert sorted(ingresses) == ["api", "lab"]  # one per HTTP endpoint, none for ssh
    lab = ingresses["lab"]
    ann = lab["metadata"]["annotations"]
    assert ann["nginx.ingress.kubernetes.io/auth-url"].endswith(f"/check/{namespace}/nb/lab")
    assert ann["toolshare.dev/owner"] == "alice"
    assert ann[SHARED_WITH[0]] == "" and ann[SHARED_WITH[1]] == ""
    assert ingresses["api"]["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"
    assert lab["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "toolshare", "toolshare.dev/run": "nb",
                                         "toolshare.dev/endpoint": "lab"}
    assert lab["metadata"]["ownerReferences"][0]["uid"] == uid
    backend_ports = [p["backend"]["service"]["port"] for r in lab["spec"]["rules"] for p in r["http"]["paths"]]
    assert backend_ports == [{"name": "lab"}]
    policy = ts.net.read_namespaced_network_policy("nb", namespace)
    exposed = [p.port for rule in policy.spec.ingress or [] for p in rule.ports or []]
    assert 22 not in exposed and "ssh" not in exposed
    status = run["status"]
    assert status["urls"] == [{"endpoint": "lab", "url": f"http://nb-{namespace}.toolshare.localhost/lab"},
                              {"endpoint": "api", "url": f"http://nb-{namespace}.toolshare.localhost/"}] or \
        sorted(u["endpoint"] for u in status["urls"]) == ["api", "lab"]
    assert status["podPhase"] == "Pending"  # its image is in no registry here: it never starts


def test_share_with_user_group_and_both(ts):
    ts.create(toolrun("nb"))
    wait_for(lambda: ready(ts, "toolruns", "nb"), what="ToolRun Ready")
    ts.create(runshare("to-bob", run="nb", users=["bob"]))
    wait_for(lambda: allowed(ts, "nb") == ("bob", ""), what="bob on the Ingress")
    ts.create(runshare("to-lab", run="nb", groups=["lab"]))
    wait_for(lambda: allowed(ts, "nb") == ("bob", "lab"), what="lab group on the Ingress")
    ts.create(runshare("both", run="nb", users=["carol", "alice@example.org"], groups=["data-science"]))
    wait_for(lambda: allowed(ts, "nb") == ("alice@example.org,bob,carol", "data-science,lab"), what="union")
    # The Ingress is written before the run's status (sharedWith): wait until every status is written.
    converged(ts.api.api_client, ts.ns)
    share = ts.get("runshares", "both")
    assert share["status"]["runs"] == ["nb"]
    assert ts.condition("runshares", "both")["reason"] == "Active"
    run = ts.get("toolruns", "nb")
    assert run["status"]["sharedWith"]["users"] == ["alice@example.org", "bob", "carol"]
    assert run["status"]["sharedWith"]["groups"] == ["data-science", "lab"]
    wait_for(lambda: ("Shared", "RunShare to-bob shares this run with bob") in ts.events("nb"), what="Shared event")


def test_per_endpoint_share(ts):
    ts.create(toolrun("ide", endpoints=[
        {"name": "lab", "port": 8888, "protocol": "http"},
        {"name": "viewer", "port": 9000, "protocol": "http", "path": "/view"},
    ]))
    ts.create(runshare("viewer-only", run="ide", users=["bob"], endpoints=["viewer"]))
    wait_for(lambda: allowed(ts, "ide", "viewer") == ("bob", ""), what="bob on viewer")
    converged(ts.api.api_client, ts.ns)  # the lab Ingress too, whatever order the writes came in
    assert allowed(ts, "ide", "lab") == ("", "")


def test_share_naming_an_ssh_endpoint_is_invalid_and_never_applied(ts):
    ts.create(toolrun("nb"))
    ts.create(runshare("ssh-please", run="nb", users=["bob"], endpoints=["ssh"]))
    cond = wait_for(lambda: (c := ts.condition("runshares", "ssh-please")) and c["reason"] == "Invalid" and c,
                    what="Invalid share")
    assert "SSH is never shared" in cond["message"]
    wait_for(lambda: ready(ts, "toolruns", "nb"), what="run Ready")
    assert allowed(ts, "nb") == ("", "")


def test_formation_shared_by_selector(ts):
    for name in ("web", "db", "other"):
        labels = {"formation": "genomics"} if name != "other" else {"formation": "physics"}
        ts.create(toolrun(name, labels=labels))
    ts.create(runshare("genomics", selector={"matchLabels": {"formation": "genomics"}}, groups=["lab"]))
    for name in ("web", "db"):
        wait_for(lambda: allowed(ts, name) == ("", "lab"), what=f"{name} shared with lab")
    # A share reconciled before every run reached the operator is Ready with fewer runs at first.
    converged(ts.api.api_client, ts.ns)
    assert ready(ts, "runshares", "genomics")
    assert ts.get("runshares", "genomics")["status"]["runs"] == ["db", "web"]
    wait_for(lambda: ready(ts, "toolruns", "other"), what="other Ready")
    assert allowed(ts, "other") == ("", "")
    # A run joining the formation later is shared too.
    ts.create(toolrun("late", labels={"formation": "genomics"}))
    wait_for(lambda: allowed(ts, "late") == ("", "lab"), what="late run shared")
    wait_for(lambda: ts.get("runshares", "genomics")["status"]["runs"] == ["db", "late", "web"], what="runs updated")


# A share must live long enough for the operator to render it before it expires, even on a loaded
# machine (the suite's own processes share 2 cores): the tests below see it shared, then gone.
LIFETIME = 12


def test_expiry_removes_principals_and_says_expired(ts):
    ts.create(toolrun("nb"))
    wait_for(lambda: ready(ts, "toolruns", "nb"), what="run Ready")
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=LIFETIME)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ts.create(runshare("brief", run="nb", users=["bob"], expires_at=soon))
    wait_for(lambda: allowed(ts, "nb") == ("bob", ""), what="bob shared")
    wait_for(lambda: allowed(ts, "nb") == ("", ""), timeout=LIFETIME + 30, what="bob removed at expiry")
    cond = wait_for(lambda: (c := ts.condition("runshares", "brief")) and c["reason"] == "Expired" and c, what="Expired")
    assert cond["status"] == "False"
    wait_for(lambda: any(r == "ShareExpired" for r, _ in ts.events("nb")), what="ShareExpired event")


def test_a_renewed_share_expires_again(ts):
    """The expiry timer of a share is armed again after it has fired once (a fired timer used to
    block every later one for the same share, so a renewed share never expired)."""
    def in_(seconds):
        return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")

    ts.create(toolrun("nb"))
    wait_for(lambda: ready(ts, "toolruns", "nb"), what="run Ready")
    ts.create(runshare("brief", run="nb", users=["bob"], expires_at=in_(LIFETIME)))
    wait_for(lambda: allowed(ts, "nb") == ("bob", ""), what="bob shared")
    wait_for(lambda: allowed(ts, "nb") == ("", ""), timeout=LIFETIME + 30, what="bob removed at the first expiry")
    ts.patch("runshares", "brief", {"spec": {"expiresAt": in_(LIFETIME)}})
    wait_for(lambda: allowed(ts, "nb") == ("bob", ""), what="bob shared again once renewed")
    wait_for(lambda: allowed(ts, "nb") == ("", ""), timeout=LIFETIME + 30, what="bob removed at the second expiry")


def test_unshare_removes_principals_and_records_it(ts):
    ts.create(toolrun("nb"))
    ts.create(runshare("to-bob", run="nb", users=["bob"]))
    wait_for(lambda: allowed(ts, "nb") == ("bob", ""), what="bob shared")
    ts.delete("runshares", "to-bob")
    wait_for(lambda: allowed(ts, "nb") == ("", ""), what="bob removed")
    wait_for(lambda: any(r == "Unshared" for r, _ in ts.events("nb")), what="Unshared event")
    wait_for(lambda: ts.get("toolruns", "nb")["status"]["sharedWith"]["users"] == [], what="status updated")


def test_run_deletion_collects_children_and_shares_go_run_not_found(ts, namespace):
    ts.create(toolrun("nb"))
    ts.create(runshare("to-bob", run="nb", users=["bob"]))
    wait_for(lambda: allowed(ts, "nb") == ("bob", ""), what="shared")
    ts.delete("toolruns", "nb")
    wait_for(lambda: not ts.ingresses("nb"), timeout=60, what="Ingresses garbage-collected")
    wait_for(lambda: not ts.core.list_namespaced_service(namespace, label_selector="toolshare.dev/run=nb").items,
             timeout=60, what="Service garbage-collected")
    cond = wait_for(lambda: (c := ts.condition("runshares", "to-bob")) and c["reason"] == "RunNotFound" and c,
                    what="RunNotFound")
    assert cond["status"] == "False"


def test_friendly_name_clash_gives_the_later_run_a_condition(ts, cluster, namespace):
    ts.create(toolrun("first", friendly=f"fn-{namespace}"))
    wait_for(lambda: ready(ts, "toolruns", "first"), what="first Ready")
    ts.create(toolrun("second", friendly=f"fn-{namespace}"))
    cond = wait_for(lambda: (c := ts.condition("toolruns", "second")) and c["reason"] == "FriendlyNameConflict" and c,
                    what="conflict condition")
    assert "first" in cond["message"] and cond["status"] == "False"
    assert ts.ingresses("second") == {}
    assert list(ts.ingresses("first")) == ["lab"]
    # When the holder goes, the later run gets the host.
    ts.delete("toolruns", "first")
    wait_for(lambda: ready(ts, "toolruns", "second"), what="second takes the host after first is gone")
    wait_for(lambda: list(ts.ingresses("second")) == ["lab"], what="second's Ingress")


def test_operator_metrics_count_reconciles_writes_and_active_shares(ts, operator):
    from prometheus_client.parser import text_string_to_metric_families

    ts.create(toolrun("nb"))
    # The operator counts a reconcile after its last write. A run reconciles one at a time, so once
    # nb is Ready, the reconcile that shares it starts only after that first one was counted.
    wait_for(lambda: ready(ts, "toolruns", "nb"), what="ToolRun Ready")
    ts.create(runshare("to-bob", run="nb", users=["bob"]))
    wait_for(lambda: allowed(ts, "nb") == ("bob", ""), what="shared")
    # The Shared event is posted after the share's reconcile was counted (active shares, duration).
    wait_for(lambda: any(r == "Shared" for r, _ in ts.events("nb")), what="Shared event")
    families = {f.name: f for f in text_string_to_metric_families(operator.metrics())}
    samples = lambda name: {tuple(sorted(s.labels.items())): s.value for s in families[name].samples}  # noqa: E731
    assert samples("toolshare_reconciles")[(("kind", "ToolRun"), ("result", "ok"))] >= 1
    assert samples("toolshare_api_writes")[(("kind", "Ingress"), ("verb", "PATCH"))] >= 1
    assert samples("toolshare_active_shares")[()] >= 1
    assert any(s.name == "toolshare_reconcile_duration_seconds_count" and s.value >= 1
               for s in families["toolshare_reconcile_duration_seconds"].samples)
