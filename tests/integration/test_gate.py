"""The gate end to end: real oauth2-proxy, signed tokens, the operator reconciling the runs.

Every answer below comes from `toolshare gate` deciding from the ToolRuns and RunShares; people are
alice (owner), bob (shared user), carol (in group guests), dave (nobody shares with him) and an
anonymous caller.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.support import rbac
from tests.support.auth import PEOPLE, get, matrix
from tests.support.objects import Toolshare, runshare, toolrun
from tests.support.wait import wait_for
from toolshare.local import services as devservices

OWNER_ONLY = (202, 403, 403, 403, 401)
SHARED = (202, 202, 202, 403, 401)


@pytest.fixture
def ts(cluster, namespace):
    return Toolshare(cluster.client(), namespace)


def _settle(gate, issuer, ns, run, ep, expected, timeout=30.0):
    return wait_for(lambda: matrix(gate.url, issuer, ns, run, ep) == expected, timeout=timeout,
                    what=f"{dict(zip(PEOPLE, expected))} on {run}/{ep}")


def _has_ingress(ts, run):
    return wait_for(lambda: ts.ingresses(run), what=f"Ingresses of {run}")


def test_share_and_unshare_open_and_close_the_gate(operator, gate, issuer, ts, namespace):
    ts.create(toolrun("nb"))
    _has_ingress(ts, "nb")
    _settle(gate, issuer, namespace, "nb", "lab", OWNER_ONLY)

    ts.create(runshare("with-bob", run="nb", users=["bob"], groups=["guests"]))
    _settle(gate, issuer, namespace, "nb", "lab", SHARED)
    assert matrix(gate.url, issuer, namespace, "nb", "lab") == SHARED

    ts.delete("runshares", "with-bob")
    _settle(gate, issuer, namespace, "nb", "lab", OWNER_ONLY)
    # SSH is never an endpoint the gate opens, not even to the owner.
    assert get(f"{gate.url}/check/{namespace}/nb/ssh", issuer.token("alice"))[0] == 403


def test_per_endpoint_share_opens_only_that_endpoint(operator, gate, issuer, ts, namespace):
    ts.create(toolrun("two", endpoints=[{"name": "lab", "port": 8888, "protocol": "http"},
                                        {"name": "api", "port": 9000, "protocol": "http", "path": "/api"}]))
    wait_for(lambda: len(ts.ingresses("two")) == 2, what="two Ingresses")
    ts.create(runshare("api-only", run="two", users=["bob"], groups=["guests"], endpoints=["api"]))
    _settle(gate, issuer, namespace, "two", "api", SHARED)
    assert matrix(gate.url, issuer, namespace, "two", "lab") == OWNER_ONLY


def test_expiry_closes_the_gate_without_anyone_acting(operator, gate, issuer, ts, namespace):
    ts.create(toolrun("brief"))
    _has_ingress(ts, "brief")
    expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=12)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ts.create(runshare("short", run="brief", users=["bob"], groups=["guests"], expires_at=expires))
    _settle(gate, issuer, namespace, "brief", "lab", SHARED)
    _settle(gate, issuer, namespace, "brief", "lab", OWNER_ONLY, timeout=30)
    assert dt.datetime.now(dt.timezone.utc) >= dt.datetime.fromisoformat(expires.replace("Z", "+00:00"))


def test_identity_comes_only_from_oauth2_proxy(operator, gate, issuer, ts, namespace):
    ts.create(toolrun("mine"))
    _has_ingress(ts, "mine")
    _settle(gate, issuer, namespace, "mine", "lab", OWNER_ONLY)
    url = f"{gate.url}/check/{namespace}/mine/lab"
    forged = {"X-Auth-Request-User": "alice", "X-Auth-Request-Preferred-Username": "alice",
              "X-Auth-Request-Groups": "guests,lab", "X-Forwarded-User": "alice", "X-Remote-User": "alice"}
    assert get(url, None, forged)[0] == 401
    assert get(url, issuer.token("dave"), forged)[0] == 403
    # A token signed by someone else's key, or naming alice but expired, is nobody.
    assert get(url, issuer.token("alice", ttl=-60))[0] == 401
    status, headers, _ = get(url, issuer.token("alice"), forged)
    assert status == 202
    assert (headers["X-Auth-Request-User"], headers["X-Auth-Request-Email"], headers["X-Auth-Request-Groups"]) == (
        "alice", "alice@toolshare.test", "lab,data-science")


def test_unknown_run_or_endpoint_is_refused_like_a_forbidden_one(gate, issuer, namespace):
    status, _, body = get(f"{gate.url}/check/{namespace}/ghost/lab", issuer.token("alice"))
    assert status == 403 and body == f"alice may not use ghost/lab in {namespace}\n"
    # Not signed in comes first: an anonymous caller learns nothing about which runs exist.
    assert get(f"{gate.url}/check/{namespace}/ghost/lab")[0] == 401


def test_gate_fails_closed_when_oauth2_proxy_is_unreachable(cluster, crds, issuer, tmp_path):
    dead = f"http://127.0.0.1:{devservices.free_port()}/oauth2/auth"
    svc = devservices.gate(cluster.kubeconfig(), dead, tmp_path, env=rbac.POLICY_ENV).start()
    try:
        status, _, body = get(f"{svc.url}/check/default/any/lab", issuer.token("alice"))
        assert status == 503 and "oauth2-proxy" in body
        assert get(f"{svc.ops_url}/healthz")[0] == 200
        assert get(f"{svc.ops_url}/readyz")[0] == 200
        assert get(f"{svc.url}/metrics")[0] == get(f"{svc.url}/readyz")[0] == 404  # not where the router calls
        assert get(f"{svc.ops_url}/metrics")[0] == 200
    finally:
        svc.stop()


def test_replicas_agree_and_shared_with_me_lists_alices_run(operator, gate, oauth2_proxy, issuer, ts,
                                                             namespace, cluster, tmp_path):
    second = devservices.gate(cluster.kubeconfig(), f"{oauth2_proxy.url}/oauth2/auth", tmp_path,
                              env=rbac.POLICY_ENV).start()
    try:
        ts.create(toolrun("shared-nb"))
        _has_ingress(ts, "shared-nb")
        ts.create(runshare("for-bob", run="shared-nb", users=["bob"]))
        ts.create(runshare("for-guests", run="shared-nb", groups=["guests"]))
        for g in (gate, second):
            _settle(g, issuer, namespace, "shared-nb", "lab", SHARED)

        status, _, body = get(f"{second.url}/api/shared-with-me", issuer.token("bob"))
        assert status == 200
        view = json.loads(body)
        assert view["user"] == "bob"
        mine = [r for r in view["sharedWithMe"] if r["namespace"] == namespace]
        assert [r["name"] for r in mine] == ["shared-nb"]
        run = mine[0]
        assert run["owner"] == "alice"
        assert run["endpoints"] == [{"name": "lab", "url": f"http://shared-nb-{namespace}.toolshare.localhost/"}]
        assert [(s["name"], s["via"], s["sharedBy"], s["expiresAt"]) for s in run["shares"]] == [
            ("for-bob", "user", "admin", None)]  # the webhook records who created it
        assert run["shares"][0]["since"]

        carol = json.loads(get(f"{gate.url}/api/shared-with-me", issuer.token("carol"))[2])
        assert [s["via"] for r in carol["sharedWithMe"] if r["namespace"] == namespace for s in r["shares"]] == [
            "group:guests"]
        alice = json.loads(get(f"{gate.url}/api/shared-with-me", issuer.token("alice"))[2])
        assert namespace in {r["namespace"] for r in alice["owned"]}
        dave = json.loads(get(f"{gate.url}/api/shared-with-me", issuer.token("dave"))[2])
        assert not [r for r in dave["sharedWithMe"] if r["namespace"] == namespace]
        assert get(f"{gate.url}/api/shared-with-me")[0] == 401
        status, headers, html = get(f"{gate.url}/shared-with-me", issuer.token("bob"))
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert "shared-nb" in html and "alice" in html
    finally:
        second.stop()
