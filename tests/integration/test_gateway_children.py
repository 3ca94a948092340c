"""Gateway routing's children and write budget against a real API server, with no node and no
Gateway controller: the CRDs alone (Gateway API v1.4.0 experimental, Traefik's Middleware, Envoy
Gateway's SecurityPolicy: toolshare.local.gatewayapi), the operator as in production under its
service account, and the API server's own count of write requests.

One control plane per auth flavour (TOOLSHARE_GATEWAY_AUTH). A run with an HTTP and an SSH endpoint
gets exactly one HTTPRoute (and its auth object); a share change rewrites the route and the run's
status only; a route deleted by hand is put back; a restart writes nothing; and a restart in ingress
mode, with the gateway RBAC taken away again, replaces the route and its auth object by an Ingress.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import cluster as support, metrics, rbac
from tests.support.expected import converged
from tests.support.install import install_crds, start_operator
from tests.support.metrics import delta
from tests.support.objects import Toolshare, runshare, toolrun
from tests.support.operator_process import OperatorProcess
from tests.support.wait import wait_for
from toolshare import model
from toolshare.local import gatewayapi
from toolshare.local.controlplane import cluster as controlplane
from toolshare.local.controlplane.binaries import ensure_binaries
from toolshare.settings import Settings

GATEWAY = "gateways/public"
NS, RUN = "lab", "nb"
GATE_URL = "http://toolshare-gate.toolshare-system.svc.cluster.local:8080"  # the default: a Service
# Every resource the operator (or this test) writes; the API server counts writes per resource.
OURS = {"pods", "services", "ingresses", "networkpolicies", "toolruns", "runshares", "events",
        "httproutes", "middlewares", "securitypolicies"}
# (group, version, plural) of each kind, and the auth object per flavour.
KINDS = {"HTTPRoute": ("gateway.networking.k8s.io", "v1", "httproutes"),
         "Middleware": ("traefik.io", "v1alpha1", "middlewares"),
         "SecurityPolicy": ("gateway.envoyproxy.io", "v1alpha1", "securitypolicies")}
AUTH_KIND = {"traefik": "Middleware", "external-auth": None, "envoy-gateway": "SecurityPolicy"}
RECONCILED = {"Pod", "Service", "Ingress", "NetworkPolicy", *KINDS, "ToolRun/status", "RunShare/status", "Event"}


def gateway_env(auth: str) -> dict[str, str]:
    # The gate URL named, not inherited: the session's tests set theirs in this process's environment.
    return {"TOOLSHARE_GATE_URL": GATE_URL, "TOOLSHARE_ROUTING": "gateway", "TOOLSHARE_GATEWAY": GATEWAY,
            "TOOLSHARE_GATEWAY_AUTH": auth}


@dataclass
class Plane:
    cluster: support.TestCluster
    work: Path
    auth: str
    operator: OperatorProcess | None = None


@pytest.fixture(params=["traefik", "external-auth", "envoy-gateway"])
def plane(request, tmp_path_factory):
    auth = request.param
    crds = gatewayapi.crd_files(auth)  # never skipped: a CRD that cannot be had fails, saying which
    directory = tmp_path_factory.mktemp(f"gateway-{auth}")
    controlplane.up(directory)  # no node: nothing here needs a Pod to run
    tc = support.TestCluster(directory / "kubeconfig", directory, local_dir=directory)
    p = Plane(tc, directory / "work", auth)
    for sub in ("gateway", "ingress"):
        (p.work / sub).mkdir(parents=True)
    try:
        install_crds(tc)
        gatewayapi.install(ensure_binaries(), tc.kubeconfig(), crds)
        kubernetes.client.CoreV1Api(tc.client()).create_namespace({"metadata": {"name": NS}})
        p.operator = start_operator(tc, p.work / "gateway", env=gateway_env(auth))
        yield p
    finally:
        if p.operator is not None:
            p.operator.stop()
        support.stop(tc)


# --- reading the cluster -----------------------------------------------------------------------


def objects(client, kind: str) -> list[dict]:
    """The run's objects of a Gateway-side kind (none when the kind is not served)."""
    group, version, plural = KINDS[kind]
    try:
        return kubernetes.client.CustomObjectsApi(client).list_namespaced_custom_object(
            group, version, NS, plural, label_selector=f"{model.LABEL_RUN}={RUN}")["items"]
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return []
        raise


def ingresses(client) -> list:
    return kubernetes.client.NetworkingV1Api(client).list_namespaced_ingress(
        NS, label_selector=f"{model.LABEL_RUN}={RUN}").items


def the_route(client) -> dict | None:
    routes = objects(client, "HTTPRoute")
    assert len(routes) <= 1, [r["metadata"]["name"] for r in routes]
    return routes[0] if routes else None


def allowed_users(client) -> str | None:
    route = the_route(client)
    return route["metadata"]["annotations"].get("toolshare.dev/allowed-users") if route else None


def settled(cluster, quiet: float = 3.0):
    """The write counts once settled (dry runs, such as start_operator's check of the principals
    policy, left out: they change nothing)."""
    return metrics.settled(cluster.client(), OURS, NS, quiet=quiet, dry_run=False)


def events(client) -> list[tuple]:
    """Every Event in the cluster, for a failing write count to say who wrote what."""
    return [(e.metadata.namespace, e.involved_object.kind, e.involved_object.name, e.type, e.reason,
             (e.source.component if e.source else None), e.reporting_component, (e.message or "")[:300])
            for e in kubernetes.client.CoreV1Api(client).list_event_for_all_namespaces().items]


def reconciles(operator: OperatorProcess, kind: str) -> float:
    return metrics.reconciles(operator.metrics(), kind)


def operator_writes(operator: OperatorProcess) -> dict[tuple[str, str], float]:
    """The operator's own count of its writes of children, statuses and events (toolshare_api_writes_total;
    its start-up writes of its webhook configurations and admission policies left out), by verb and kind."""
    return {(s.labels["verb"], s.labels["kind"]): s.value for f in text_string_to_metric_families(operator.metrics())
            for s in f.samples if s.name == "toolshare_api_writes_total" and s.value
            and s.labels["kind"] in RECONCILED}


# --- the scenario ------------------------------------------------------------------------------


def test_gateway_children_and_their_write_budget(plane):
    tc, auth, client = plane.cluster, plane.auth, plane.cluster.client()
    settings = Settings.from_env(gateway_env(auth))
    auth_kind = AUTH_KIND[auth]
    ts = Toolshare(client, NS)
    # The operator watches its routing's kinds, and the other served ones (Ingresses always are).
    watched = ", ".join(["Pod", "Service", "Ingress", "NetworkPolicy", "HTTPRoute", *([auth_kind] if auth_kind else [])])
    assert f"watching children of kinds {watched}\n" in plane.operator.log_path.read_text()

    # A run with one HTTP and one SSH endpoint: one HTTPRoute (and its auth object), no route for SSH.
    start = settled(tc)
    ts.create(toolrun(RUN))  # lab (http 8888) and ssh (22)
    route = wait_for(lambda: the_route(client), what="the run's HTTPRoute")
    converged(client, NS, settings=settings)
    assert [r["metadata"]["labels"][model.LABEL_ENDPOINT] for r in objects(client, "HTTPRoute")] == ["lab"]
    spec = route["spec"]
    assert spec["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                   "namespace": "gateways", "name": "public"}]
    assert spec["hostnames"] == [f"{RUN}-{NS}.{settings.base_domain}"]
    [rule] = spec["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert [(b["kind"], b["name"], b["port"]) for b in rule["backendRefs"]] == [("Service", RUN, 8888)]
    check = f"/check/{NS}/{RUN}/lab"
    if auth == "traefik":
        [middleware] = objects(client, "Middleware")
        assert middleware["metadata"]["name"] == model.middleware_name(NS, RUN, "lab")
        assert rule["filters"] == [{"type": "ExtensionRef", "extensionRef": {
            "group": "traefik.io", "kind": "Middleware", "name": middleware["metadata"]["name"]}}]
        assert middleware["spec"]["forwardAuth"]["address"] == GATE_URL + check
    elif auth == "external-auth":
        [f] = rule["filters"]
        assert f["type"] == "ExternalAuth" and f["externalAuth"]["http"]["path"] == check
        assert f["externalAuth"]["backendRef"]["name"] == "toolshare-gate"
    else:
        [policy] = objects(client, "SecurityPolicy")
        assert "filters" not in rule
        assert policy["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                                                 "name": route["metadata"]["name"]}]
        assert policy["spec"]["extAuth"]["http"]["pathOverride"] == check
    # Owned by the run (garbage-collected with it), like every child.
    owner = ts.get("toolruns", RUN)["metadata"]["uid"]
    for obj in [route, *(objects(client, auth_kind) if auth_kind else [])]:
        assert [(o["kind"], o["name"], o["uid"], o.get("controller")) for o in obj["metadata"]["ownerReferences"]] == [
            ("ToolRun", RUN, owner, True)]
    assert ingresses(client) == []
    if auth_kind != "SecurityPolicy":
        assert objects(client, "SecurityPolicy") == []
    created = delta(settled(tc), start)
    assert created.pop(("POST", "toolruns", ""), 0) == 1  # the test's own
    assert created.pop(("PATCH", "toolruns", "status"), 0) >= 1
    assert created == {("APPLY", r, ""): 1 for r in ("pods", "services", "httproutes", "networkpolicies",
                                                     *([KINDS[auth_kind][2]] if auth_kind else []))}, (
        created, events(client))

    # A share: the route's access list and the run's status; the auth object does not change.
    ts.create(runshare("to-bob", run=RUN, users=["bob"]))
    wait_for(lambda: allowed_users(client) == "bob", what="bob on the route")
    converged(client, NS, settings=settings)
    before = settled(tc)
    ts.patch("runshares", "to-bob", {"spec": {"users": ["bob", "carol"]}})
    wait_for(lambda: allowed_users(client) == "bob,carol", what="carol on the route")
    converged(client, NS, settings=settings)  # the run's status is written after its route
    change = delta(settled(tc), before)
    assert change.pop(("PATCH", "runshares", ""), 0) == 1  # the test's own
    assert change == {("APPLY", "httproutes", ""): 1, ("PATCH", "toolruns", "status"): 1}, change

    # Drift: the route deleted by hand (then its auth object) is put back, and nothing else written.
    custom = kubernetes.client.CustomObjectsApi(client)
    for kind in ("HTTPRoute", *([auth_kind] if auth_kind else [])):
        group, version, plural = KINDS[kind]
        before = settled(tc)
        old = objects(client, kind)[0]
        custom.delete_namespaced_custom_object(group, version, NS, plural, old["metadata"]["name"])
        again = wait_for(lambda: next((o for o in objects(client, kind)
                                       if o["metadata"]["uid"] != old["metadata"]["uid"]), None),
                         what=f"the {kind} put back")
        assert again["spec"] == old["spec"] and again["metadata"]["annotations"] == old["metadata"]["annotations"]
        converged(client, NS, settings=settings)
        assert delta(settled(tc), before) == {("DELETE", plural, ""): 1, ("APPLY", plural, ""): 1}

    # A restart reconciles the run and the share against what is served (CRD defaults included)
    # and writes nothing.
    before = settled(tc)
    plane.operator.restart()
    wait_for(lambda: reconciles(plane.operator, "ToolRun") >= 1 and reconciles(plane.operator, "RunShare") >= 1,
             timeout=120, what="the restarted operator to reconcile the run and the share")
    assert delta(settled(tc, quiet=5.0), before) == {}, "a restart wrote something"
    assert operator_writes(plane.operator) == {}
    assert "Traceback" not in plane.operator.log_tail(50000)

    # Back to ingress, with the gateway rules taken away (the base role lists, watches and deletes
    # the Gateway kinds): the Ingress comes, the route and its auth object go.
    plane.operator.stop()
    rbac.remove_gateway(tc)
    before = settled(tc)
    plane.operator = start_operator(tc, plane.work / "ingress", env={"TOOLSHARE_GATE_URL": GATE_URL})
    wait_for(lambda: len(ingresses(client)) == 1 and not objects(client, "HTTPRoute")
             and not (auth_kind and objects(client, auth_kind)), timeout=60,
             what="the Ingress instead of the HTTPRoute and its auth object")
    converged(client, NS, settings=Settings.from_env({"TOOLSHARE_GATE_URL": GATE_URL}))
    [ingress] = ingresses(client)
    assert ingress.metadata.annotations["toolshare.dev/allowed-users"] == "bob,carol"
    switched = delta(settled(tc), before)
    assert switched == {("APPLY", "ingresses", ""): 1, ("DELETE", "httproutes", ""): 1,
                        **({("DELETE", KINDS[auth_kind][2], ""): 1} if auth_kind else {})}, switched
    assert f"watching children of kinds {watched}\n" in plane.operator.log_path.read_text()  # the same kinds
    writes = operator_writes(plane.operator)
    assert writes == {("PATCH", "Ingress"): 1, ("DELETE", "HTTPRoute"): 1,
                      **({("DELETE", auth_kind): 1} if auth_kind else {})}, writes
    assert "Traceback" not in plane.operator.log_tail(50000)
