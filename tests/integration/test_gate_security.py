"""The gate's promise against people who try: nobody gets in whom the owner did not let in, and an
unshare takes them out, whatever else is in the cluster and whether or not the operator runs.

A control plane of this module's own (the operator is stopped in one test), the operator as in
production, and the gate under its own service account bound to exactly manifests/gate's
ClusterRole. alice owns the run; carol is alice's co-tenant with `edit` in the namespace; bob is the
sharee; dave is a stranger.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import kubernetes
import pytest
import yaml

from tests.support import cluster as support, rbac
from tests.support.auth import get, matrix
from tests.support.expected import converged
from tests.support.install import install_crds, start_operator
from tests.support.objects import Toolshare, runshare, toolrun
from tests.support.operator_process import OperatorProcess
from tests.support.wait import wait_for
from toolshare import model
from toolshare.client.config import ApiConfig
from toolshare.client.watch import Reflector
from toolshare.local import services as devservices
from toolshare.local.controlplane import cluster as controlplane
from toolshare.local.dev import repo_root

GATE_NAMESPACE, GATE_SA = "toolshare-system", "toolshare-gate"
PEOPLE = ("alice", "bob", "carol", "dave", None)
OWNER_ONLY = (202, 403, 403, 403, 401)
PREFIX = ".".join(["a" * 60] * 3) + ".example.org"  # a label key prefix of 195 characters
BOB_TOO = (202, 202, 403, 403, 401)


@dataclass
class Plane:
    cluster: support.TestCluster
    operator: OperatorProcess
    gate: devservices.Service


def _gate_kubeconfig(tc: support.TestCluster, path: Path) -> Path:
    """The gate's service account, bound to manifests/gate/clusterrole.yaml and nothing else."""
    client = tc.client()
    core, authz = kubernetes.client.CoreV1Api(client), kubernetes.client.RbacAuthorizationV1Api(client)
    role = yaml.safe_load((repo_root() / "manifests" / "gate" / "clusterrole.yaml").read_text())
    authz.create_cluster_role(role)
    core.create_namespaced_service_account(GATE_NAMESPACE, {"metadata": {"name": GATE_SA}})
    authz.create_cluster_role_binding({
        "metadata": {"name": role["metadata"]["name"]},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]},
        "subjects": [{"kind": "ServiceAccount", "name": GATE_SA, "namespace": GATE_NAMESPACE}]})
    return rbac.service_account_kubeconfig(tc, GATE_NAMESPACE, GATE_SA, path)


@pytest.fixture(scope="module")
def plane(tmp_path_factory, oauth2_proxy):
    directory = tmp_path_factory.mktemp("gate-plane")
    controlplane.up(directory)
    tc = support.TestCluster(directory / "kubeconfig", directory, local_dir=directory)
    work = directory / "work"
    work.mkdir()
    operator = gate = None
    try:
        install_crds(tc)
        operator = start_operator(tc, work)  # also creates toolshare-system and manifests/rbac
        gate = devservices.gate(_gate_kubeconfig(tc, work / "gate.kubeconfig"), f"{oauth2_proxy.url}/oauth2/auth",
                                work, env=rbac.POLICY_ENV).start()
        yield Plane(tc, operator, gate)
    finally:
        for proc in (gate, operator):
            if proc is not None:
                proc.stop()
        support.stop(tc)


@pytest.fixture
def ns(plane, request):
    name = f"g-{request.node.name.lower().replace('_', '-')[5:40].strip('-')}"
    kubernetes.client.CoreV1Api(plane.cluster.client()).create_namespace({"metadata": {"name": name}})
    rbac.bind_edit(plane.cluster, name, users=["alice", "carol"])
    return name


def _as(plane, user, namespace) -> Toolshare:
    return Toolshare(plane.cluster.client(user), namespace)


def _settle(plane, issuer, namespace, run, expected, endpoint="lab", timeout=30.0):
    wait_for(lambda: matrix(plane.gate.url, issuer, namespace, run, endpoint, PEOPLE) == expected,
             timeout=timeout, what=f"{dict(zip(PEOPLE, expected))} on {namespace}/{run}/{endpoint}")


def _forged_ingress(namespace: str, run: str, owner: str, users: str, host: str) -> dict:
    """What a namespace editor can write: an Ingress dressed as the operator's, naming herself."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": f"{run}-forged", "namespace": namespace,
                         "labels": {model.LABEL_MANAGED_BY: model.MANAGED_BY, model.LABEL_RUN: run,
                                    model.LABEL_ENDPOINT: "lab"},
                         "annotations": {"toolshare.dev/owner": owner, "toolshare.dev/allowed-users": users,
                                         "toolshare.dev/allowed-groups": ""}},
            "spec": {"rules": [{"host": host, "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": run, "port": {"number": 80}}}}]}}]}}


def test_a_forged_ingress_changes_no_answer_and_no_shared_with_me_page(plane, issuer, ns):
    alice, carol = _as(plane, "alice", ns), _as(plane, "carol", ns)
    alice.create(toolrun("nb"))
    alice.create(runshare("to-bob", run="nb", users=["bob"]))
    _settle(plane, issuer, ns, "nb", BOB_TOO)

    # carol, with `edit` in the namespace, writes her own "nb" Ingress naming herself.
    net = kubernetes.client.NetworkingV1Api(plane.cluster.client("carol"))
    net.create_namespaced_ingress(ns, _forged_ingress(ns, "nb", "carol", "carol", "evil.example.org"))
    net.create_namespaced_ingress(ns, _forged_ingress(ns, "ghost", "carol", "bob", "evil.example.org"))
    assert matrix(plane.gate.url, issuer, ns, "nb", "lab", PEOPLE) == BOB_TOO
    assert matrix(plane.gate.url, issuer, ns, "ghost", "lab", PEOPLE) == (403, 403, 403, 403, 401)
    page = json.loads(get(f"{plane.gate.url}/api/shared-with-me", issuer.token("bob"))[2])
    assert [(r["namespace"], r["name"], r["owner"]) for r in page["sharedWithMe"]] == [(ns, "nb", "alice")]
    assert all("evil" not in e["url"] for r in page["sharedWithMe"] for e in r["endpoints"])

    for name in ("nb-forged", "ghost-forged"):
        try:
            net.delete_namespaced_ingress(name, ns)
        except kubernetes.client.ApiException as e:
            assert e.status == 404  # the operator may have removed what carries its run's label
    assert matrix(plane.gate.url, issuer, ns, "nb", "lab", PEOPLE) == BOB_TOO
    assert carol.get("toolruns", "nb")["spec"]["owner"] == "alice"


def test_a_stranger_learns_nothing_about_which_runs_exist(plane, issuer, ns):
    _as(plane, "alice", ns).create(toolrun("nb"))
    _settle(plane, issuer, ns, "nb", OWNER_ONLY)
    real = get(f"{plane.gate.url}/check/{ns}/nb/lab", issuer.token("dave"))
    ghost = get(f"{plane.gate.url}/check/{ns}/ghost/lab", issuer.token("dave"))
    endpoint = get(f"{plane.gate.url}/check/{ns}/nb/nosuch", issuer.token("dave"))
    assert real[0] == ghost[0] == endpoint[0] == 403
    assert ghost[2].replace("ghost", "nb") == real[2]


def test_an_oversized_object_does_not_stop_the_gate(plane, issuer, ns):
    """A ToolRun over 512 KiB (1,800 long labels) in the watch stream: the gate keeps following."""
    alice, carol = _as(plane, "alice", ns), _as(plane, "carol", ns)
    alice.create(toolrun("nb"))
    alice.create(runshare("to-bob", run="nb", users=["bob"]))
    _settle(plane, issuer, ns, "nb", BOB_TOO)
    labels = {f"{PREFIX}/label-{i:05d}-{'x' * 40}": "v" * 63 for i in range(1800)}
    big = toolrun("big", owner="carol", labels=labels)
    assert len(json.dumps(big)) > 512 * 1024
    carol.create(big)
    # Revoking after it still takes bob out, and a run created after it is still known.
    alice.delete("runshares", "to-bob")
    _settle(plane, issuer, ns, "nb", OWNER_ONLY)
    alice.create(toolrun("later"))
    _settle(plane, issuer, ns, "later", OWNER_ONLY)
    assert get(f"{plane.gate.ops_url}/readyz")[0] == 200
    # The operator's watches went on too: it reconciles both runs created after it.
    for name in ("big", "later"):
        wait_for(lambda: (alice.condition("toolruns", name) or {}).get("reason") == "Reconciled", timeout=60,
                 what=f"{name} reconciled by the operator")


def test_a_watch_that_fails_answers_nothing_until_it_has_listed_again(plane, ns):
    """The reflector itself, against the real API server, with an event limit below the object's
    size: the watch fails on the event, stops claiming to be in sync, lists again (a LIST has no
    line limit) and holds the object."""
    api = ApiConfig.load(str(plane.cluster.kubeconfig()))
    held: dict[str, dict] = {}
    observed: list[bool] = []

    class Listing:
        """Each LIST: held is replaced by what it listed once the last page is in."""

        def __init__(self):
            self.listed = {}

        def page(self, items):
            self.listed.update({i["metadata"]["name"]: i for i in items})

        def finish(self):
            held.clear()
            held.update(self.listed)

    def event(kind, obj):
        if kind == "DELETED":
            held.pop(obj["metadata"]["name"], None)
        else:
            held[obj["metadata"]["name"]] = obj

    async def scenario():
        reflector = Reflector(api, f"/apis/{model.API_VERSION}/namespaces/{ns}/toolruns", store=Listing,
                              on_event=event, max_event_bytes=64 * 1024)
        async with aiohttp.ClientSession() as session:
            task = asyncio.create_task(reflector.run(session))
            await asyncio.wait_for(reflector.synced.wait(), 30)
            labels = {f"{PREFIX}/l-{i:04d}": "v" * 63 for i in range(400)}
            await asyncio.to_thread(_as(plane, "alice", ns).create, toolrun("wide", labels=labels))
            deadline = asyncio.get_running_loop().time() + 30
            while reflector.failures == 0 and asyncio.get_running_loop().time() < deadline:
                observed.append(reflector.synced.is_set())
                await asyncio.sleep(0.01)
            failed_at = reflector.failures
            await asyncio.wait_for(reflector.synced.wait(), 30)
            task.cancel()
            return failed_at, reflector.lists

    failures, lists = asyncio.run(scenario())
    assert failures == 1 and lists == 2
    assert "wide" in held and len(held["wide"]["metadata"]["labels"]) == 400


def test_revocation_expiry_and_ownership_hold_with_the_operator_down(plane, issuer, ns):
    alice = _as(plane, "alice", ns)
    alice.create(toolrun("nb"))
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    alice.create(runshare("to-bob", run="nb", users=["bob"]))
    alice.create(runshare("to-carol", run="nb", users=["carol"], expires_at=soon))
    _settle(plane, issuer, ns, "nb", (202, 202, 202, 403, 401))
    # The gate answers without the operator: wait until the operator has written bob into the Ingress.
    converged(plane.cluster.client(), ns)
    plane.operator.stop()
    try:
        alice.delete("runshares", "to-bob")  # DELETE needs no webhook: admitted with the operator down
        _settle(plane, issuer, ns, "nb", (202, 403, 202, 403, 401))
        _settle(plane, issuer, ns, "nb", OWNER_ONLY, timeout=40)  # carol's share expires by the gate's clock
        assert dt.datetime.now(dt.timezone.utc) >= dt.datetime.fromisoformat(soon.replace("Z", "+00:00"))
        # The Ingress still names bob: nobody rewrote it, and nothing depends on it.
        ingress = alice.ingresses("nb")["lab"]
        assert "bob" in ingress["metadata"]["annotations"]["toolshare.dev/allowed-users"]
        # Ownership holds without the operator too (CEL in the API server): carol may not delete
        # alice's run, alice may.
        with pytest.raises(kubernetes.client.ApiException) as refused:
            _as(plane, "carol", ns).delete("toolruns", "nb")
        assert refused.value.status == 403 and "belongs to alice" in refused.value.body
        alice.delete("toolruns", "nb")
        _settle(plane, issuer, ns, "nb", (403, 403, 403, 403, 401))
    finally:
        plane.operator.start()


def test_a_sharer_narrows_a_share_with_the_operator_down_and_nobody_widens_one(plane, issuer, ns):
    """The API server admits, without the webhook, an UPDATE by the share's sharer that can only
    take access away (webhookconfig.narrowed_by_sharer); anything else still needs the webhook, so
    with the operator down it is refused and the stored share is unchanged."""
    alice, carol = _as(plane, "alice", ns), _as(plane, "carol", ns)
    alice.create(toolrun("nb"))
    alice.create(runshare("team", run="nb", users=["bob", "carol"], groups=["lab"]))
    _settle(plane, issuer, ns, "nb", (202, 202, 202, 403, 401))
    converged(plane.cluster.client(), ns)
    plane.operator.stop()
    try:
        def refused(who, patch):
            before = alice.get("runshares", "team")
            with pytest.raises(kubernetes.client.ApiException) as e:
                who.patch("runshares", "team", patch)
            assert "failed calling webhook" in e.value.body, e.value.body
            after = alice.get("runshares", "team")
            assert after["spec"] == before["spec"] and after["metadata"]["resourceVersion"] == before[
                "metadata"]["resourceVersion"]

        # A co-tenant with edit narrows nothing of alice's (the sharer webhook is called for her).
        refused(carol, {"spec": {"users": ["carol"]}})
        # Widening, retargeting, a new expiry, every endpoint again: the webhook's question.
        refused(alice, {"spec": {"users": ["bob", "carol", "dave"]}})
        refused(alice, {"spec": {"groups": ["lab", "staff"]}})
        refused(alice, {"spec": {"runRef": {"name": "other"}}})
        refused(alice, {"spec": {"expiresAt": "2030-01-01T00:00:00Z"}})
        # Narrowing: fewer users, one endpoint instead of all, no groups.
        alice.patch("runshares", "team", {"spec": {"users": ["bob"], "endpoints": ["lab"]}})
        alice.patch("runshares", "team", {"spec": {"groups": None}})
        _settle(plane, issuer, ns, "nb", BOB_TOO)
        refused(alice, {"spec": {"endpoints": None}})  # back to every endpoint: wider
        # Labels and annotations of her own are no spec change: still narrow enough.
        alice.patch("runshares", "team", {"metadata": {"labels": {"team": "a"}}})
        assert alice.get("runshares", "team")["spec"] == {"runRef": {"name": "nb"}, "users": ["bob"],
                                                          "endpoints": ["lab"]}
    finally:
        plane.operator.start()


def test_identity_is_read_exactly_from_the_token(plane, issuer, ns):
    """Through the real oauth2-proxy: a group claim with a comma is not two groups, a padded or
    missing user claim is nobody, and nothing falls back to `sub`."""
    alice = _as(plane, "alice", ns)
    alice.create(toolrun("nb"))
    alice.create(runshare("to-lab", run="nb", groups=["lab"]))
    url = f"{plane.gate.url}/check/{ns}/nb/lab"
    wait_for(lambda: get(url, issuer.token("erin", groups=["lab"]))[0] == 202, what="group lab let in")
    assert get(url, issuer.token("mallory", groups=["visitors,lab"]))[0] == 403
    assert get(url, issuer.token("mallory", groups=[" lab"]))[0] == 403
    status, _, body = get(url, issuer.token("alice", preferred_username=" alice"))
    assert status == 403 and "no usable 'preferred_username' claim" in body
    assert get(url, issuer.token("alice", preferred_username=None, sub="alice"))[0] == 403
    assert get(url, issuer.token("alice"))[0] == 202
