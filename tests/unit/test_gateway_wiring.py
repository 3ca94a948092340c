"""Gateway routing in the controller and its state (docs: /work/notes/gateway-wiring.md): which child
kinds are watched, how the cache keeps routes, and what the reconciler writes and deletes, in which
order, with a client that answers as the API server would and can be made to fail."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt

import kubernetes
import pytest

from tests.unit.test_projection import leaves, set_path
from tests.unit.test_render import run_, share_
from toolshare import render
from toolshare.client.kube import ApiError, Kube
from toolshare.controller.reconcile import CHILD_KINDS, Reconciler, RetryLater, finish_child, needs_write
from toolshare.settings import Settings
from toolshare.state import cache, views
from toolshare.state.cache import SERVER_FILLED_SPEC, pack, unpack

NOW = dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc)
FLAVOURS = ["external-auth", "traefik", "envoy-gateway"]
COMPANION = {"external-auth": None, "traefik": "Middleware", "envoy-gateway": "SecurityPolicy"}
INGRESS = Settings()


def gateway(auth="traefik", **kw) -> Settings:
    return Settings(routing="gateway", gateway="gateways/public", gateway_auth=auth, **kw)


def live_run(**kw):
    run = run_(**kw)
    run["metadata"].update(uid="run-uid", resourceVersion="1", generation=1, creationTimestamp="2026-11-01T00:00:00Z")
    return run


def live_share(users=("bob",)):
    share = share_(users=users)
    share["metadata"].update(uid="share-uid", resourceVersion="2", generation=1, creationTimestamp="2026-11-01T00:00:00Z",
                             annotations={"toolshare.dev/shared-by": "alice", "toolshare.dev/shared-by-groups": ""})
    return share


def as_served(desired: dict, version: int = 42) -> dict:
    """An applied route or auth object as the API server returns it: the CRDs' defaults below the
    keys we set, identity, managedFields, a Gateway controller's status."""
    obj = copy.deepcopy(desired)
    meta = obj["metadata"]
    meta.update(uid=f"uid-{obj['kind']}-{meta['name']}", resourceVersion=str(version), generation=1,
                creationTimestamp="2026-11-22T00:00:00Z",
                managedFields=[{"manager": "toolshare", "operation": "Apply", "fieldsV1": {"f:spec": {}}}])
    if obj["kind"] == "HTTPRoute":
        for rule in obj["spec"]["rules"]:
            for ref in rule["backendRefs"]:
                ref["weight"] = 1
        obj["status"] = {"parents": [{"controllerName": "example.org/gateway", "parentRef": obj["spec"]["parentRefs"][0],
                                      "conditions": [{"type": "Accepted", "status": "True"}]}]}
    if obj["kind"] == "SecurityPolicy":
        obj["spec"]["extAuth"]["failOpen"] = False
        obj["status"] = {"ancestors": []}
    return obj


# --- the cache --------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", FLAVOURS)
def test_a_stored_route_compares_like_the_whole_route(auth):
    run = live_run()
    for desired in (finish_child(c, run) for c in render.render_children(run, [live_share()], gateway(auth), NOW, {"nb": run})):
        if desired["kind"] not in ("HTTPRoute", "Middleware", "SecurityPolicy"):
            continue
        served = as_served(desired)
        kept = unpack(pack(served))
        assert "status" not in kept and "managedFields" not in kept["metadata"]
        assert not SERVER_FILLED_SPEC.get(desired["kind"], frozenset()) & set(desired["spec"])
        assert needs_write(desired, served) is False and needs_write(desired, kept) is False
        for path in leaves({k: v for k, v in desired.items() if k != "status"}):
            drifted = copy.deepcopy(served)
            set_path(drifted, path, "drifted-by-someone")
            assert needs_write(desired, drifted) is needs_write(desired, unpack(pack(drifted))) is True, path


def test_routes_are_children_of_the_cache():
    assert {"HTTPRoute", "Middleware", "SecurityPolicy"} <= cache.CHILD_KINDS
    assert {k for _, k, _, _ in views.CHILD_KINDS} == set(CHILD_KINDS)


def test_a_packed_route_is_small():
    run = live_run()
    route = next(c for c in render.render_children(run, [live_share()], gateway(), NOW, {"nb": run}) if c["kind"] == "HTTPRoute")
    assert len(pack(as_served(finish_child(route, run)))) < 450


# --- which kinds are watched -------------------------------------------------------------------


@pytest.fixture
def restore_kinds():
    before = views.ACTIVE_CHILD_KINDS
    yield
    views.ACTIVE_CHILD_KINDS = before


def kinds(active) -> list[str]:
    return [k for _, k, _, _ in active]


def test_ingress_mode_watches_what_it_always_did_when_no_gateway_kind_is_served(restore_kinds):
    assert kinds(views.ACTIVE_CHILD_KINDS) == ["Pod", "Service", "Ingress", "NetworkPolicy"]  # the default
    assert views.configure_kinds(INGRESS, {"Ingress"}) == (
        ("v1", "Pod", "pods", "/api/v1/pods"), ("v1", "Service", "services", "/api/v1/services"),
        ("networking.k8s.io/v1", "Ingress", "ingresses", "/apis/networking.k8s.io/v1/ingresses"),
        ("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", "/apis/networking.k8s.io/v1/networkpolicies"))
    assert kinds(views.configure_kinds(INGRESS, set())) == ["Pod", "Service", "Ingress", "NetworkPolicy"]


def test_the_other_family_is_watched_when_served(restore_kinds):
    assert kinds(views.configure_kinds(INGRESS, {"Ingress", "HTTPRoute", "Middleware"})) == [
        "Pod", "Service", "Ingress", "NetworkPolicy", "HTTPRoute", "Middleware"]
    assert kinds(views.configure_kinds(gateway("traefik"), {"Ingress", "HTTPRoute", "Middleware"})) == [
        "Pod", "Service", "Ingress", "NetworkPolicy", "HTTPRoute", "Middleware"]
    assert kinds(views.configure_kinds(gateway("envoy-gateway"), {"HTTPRoute", "SecurityPolicy"})) == [
        "Pod", "Service", "NetworkPolicy", "HTTPRoute", "SecurityPolicy"]
    assert views.required_kinds(gateway("external-auth")) == ("HTTPRoute",)
    assert views.required_kinds(gateway("traefik")) == ("HTTPRoute", "Middleware")
    assert views.required_kinds(INGRESS) == ("Ingress",)


def test_children_are_read_from_the_active_kinds_only(restore_kinds):
    run = live_run()
    route = as_served(finish_child(next(c for c in render.render_children(run, [], gateway(), NOW) if c["kind"] == "HTTPRoute"), run))
    route["metadata"]["namespace"] = "children-test"
    cache.CACHE.put("httproutes", route)
    try:
        views.configure_kinds(INGRESS, set())
        assert views.children("children-test", "nb") == {}
        views.configure_kinds(INGRESS, {"HTTPRoute"})
        assert list(views.children("children-test", "nb")) == [("HTTPRoute", "nb.jupyter")]
    finally:
        cache.CACHE.drop("httproutes", route)


class Probed:
    """A client whose LISTs answer with a fixed status per path (404: not served, 403: forbidden)."""

    def __init__(self, statuses: dict[str, int], crd_channel: str | None = "experimental", flaky: int = 0):
        self.statuses, self.crd_channel, self.flaky, self.asked = statuses, crd_channel, flaky, []

    def request(self, method, path, query=None, **_):
        self.asked.append((method, path, query))
        if path.endswith("customresourcedefinitions"):
            return {"items": [{"metadata": {"annotations": {views.CHANNEL_ANNOTATION: self.crd_channel}}}]}
        if self.flaky:
            self.flaky -= 1
            raise ApiError(0, "API server unreachable")
        status = self.statuses.get(path.rsplit("/", 1)[-1], 200)
        if status != 200:
            raise ApiError(status, "{}")
        return {"items": []}


def test_the_probe_lists_one_labelled_object_of_each_route_kind(caplog):
    kube = Probed({"httproutes": 404, "middlewares": 404, "securitypolicies": 403})
    assert views.probe_kinds(kube, INGRESS) == {"Ingress"}
    assert [p.rsplit("/", 1)[-1] for _, p, _ in kube.asked] == ["ingresses", "httproutes", "middlewares", "securitypolicies"]
    assert all(q == [("limit", "1"), ("labelSelector", views.CHILD_SELECTOR)] for _, _, q in kube.asked)
    assert "securitypolicies" in caplog.text and "not cleaned up" in caplog.text
    assert "httproutes" not in caplog.text  # not served: skipped silently


@pytest.mark.parametrize("auth, statuses, message", [
    ("external-auth", {"httproutes": 404}, "needs the HTTPRoute CRD (gateway.networking.k8s.io/v1)"),
    ("traefik", {"middlewares": 404}, "needs Traefik's Middleware CRD (traefik.io/v1alpha1)"),
    ("envoy-gateway", {"securitypolicies": 404}, "needs Envoy Gateway's SecurityPolicy CRD"),
    ("traefik", {"httproutes": 403}, "listing httproutes is forbidden"),
])
def test_a_kind_the_routing_needs_and_cannot_have_stops_the_start(auth, statuses, message):
    with pytest.raises(views.KindsUnavailable, match=message.replace("(", r"\(").replace(")", r"\)")):
        views.probe_kinds(Probed(statuses), gateway(auth))


def test_external_auth_needs_the_experimental_channel():
    with pytest.raises(views.KindsUnavailable, match="'standard' channel"):
        views.probe_kinds(Probed({}, crd_channel="standard"), gateway("external-auth"))
    assert views.probe_kinds(Probed({}, crd_channel=None), gateway("external-auth")) >= {"HTTPRoute"}
    assert "SecurityPolicy" in views.probe_kinds(Probed({}, crd_channel="standard"), gateway("traefik"))


def test_the_probe_waits_for_an_api_server_that_is_away(monkeypatch):
    monkeypatch.setattr(views.time, "sleep", lambda _: None)
    assert views.probe_kinds(Probed({}, flaky=2), INGRESS) == {"Ingress", "HTTPRoute", "Middleware", "SecurityPolicy"}


# --- the reconciler ----------------------------------------------------------------------------


class Server(Kube):
    """Answers writes as the API server would and records them; `fail(method, kind)` makes those
    requests fail with a 500 (the API server, or a webhook, refusing)."""

    def __init__(self):
        super().__init__(kubernetes.client.ApiClient(kubernetes.client.Configuration()))
        self.sent: list[tuple[str, str, str]] = []
        self.version = 100
        self.objects: dict[tuple[str, str], dict] = {}
        self.failing: set[tuple[str, str]] = set()
        self.run_status: dict = {}

    async def arequest(self, method, path, body=None, query=None, content_type="", kind=""):
        verb = {"PATCH": "APPLY" if content_type.startswith("application/apply") else "PATCH"}.get(method, method)
        if (verb, kind) in self.failing:
            raise ApiError(500, "refused")
        self.version += 1
        name = path.rsplit("/", 1)[-1]
        self.sent.append((verb, kind, name))
        if path.endswith("/status"):
            self.run_status = copy.deepcopy(body["status"])
            return {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun",
                    "metadata": {"name": path.split("/")[-2], "namespace": "ns", "uid": "run-uid",
                                 "resourceVersion": str(self.version)}, "status": body["status"]}
        if method == "DELETE":
            self.objects.pop((kind, name), None)
            return {}
        served = as_served(body, self.version)
        self.objects[(kind, name)] = served
        return copy.deepcopy(served)

    def children(self) -> dict:
        return {key: unpack(pack(obj)) for key, obj in self.objects.items()}


def reconcile(server: Server, settings: Settings, shares=(), run=None, host_owner=None):
    """One reconcile against what the server holds; returns the writes (verb, kind, name) it sent."""
    run = copy.deepcopy(run or live_run())
    run["status"] = copy.deepcopy(server.run_status)  # as the last reconcile left it
    reconciler = Reconciler(server, settings)
    server.sent.clear()
    try:
        asyncio.run(reconciler.reconcile_run(run, list(shares), {"nb": run}, server.children(), host_owner, NOW))
    finally:
        sent = list(server.sent)
    return sent


@pytest.mark.parametrize("auth", FLAVOURS)
def test_a_new_run_writes_its_route_and_auth_object_and_nothing_for_ssh(auth):
    server = Server()
    sent = reconcile(server, gateway(auth))
    companion = COMPANION[auth]
    expected = ["Pod", "Service", *([companion] if companion else []), "HTTPRoute", "NetworkPolicy", "ToolRun/status"]
    assert [k for _, k, _ in sent] == expected
    assert [n for _, k, n in sent if k == "HTTPRoute"] == ["nb.jupyter"]  # no route for the SSH endpoint
    assert reconcile(server, gateway(auth)) == []  # as served, CRD defaults and status included: nothing


@pytest.mark.parametrize("auth", ["traefik", "envoy-gateway"])
def test_a_share_change_rewrites_the_route_and_the_status_only(auth):
    server = Server()
    reconcile(server, gateway(auth))
    sent = reconcile(server, gateway(auth), shares=[live_share()])
    assert sent == [("APPLY", "HTTPRoute", "nb.jupyter"), ("PATCH", "ToolRun/status", "status")]
    assert server.objects[("HTTPRoute", "nb.jupyter")]["metadata"]["annotations"]["toolshare.dev/allowed-users"] == "bob"


@pytest.mark.parametrize("auth", ["traefik", "envoy-gateway"])
def test_a_route_is_never_written_without_its_auth_object(auth):
    server = Server()
    server.failing.add(("APPLY", COMPANION[auth]))
    with pytest.raises(RetryLater, match=f"writing {COMPANION[auth]}"):
        reconcile(server, gateway(auth))
    assert [k for _, k, _ in server.sent] == ["Pod", "Service", "NetworkPolicy", "ToolRun/status"]
    assert server.run_status["conditions"][0]["reason"] == "ApplyFailed"
    server.failing.clear()
    sent = reconcile(server, gateway(auth))
    assert [k for _, k, _ in sent] == [COMPANION[auth], "HTTPRoute", "ToolRun/status"]


def test_switching_backends_writes_the_new_family_then_deletes_routes_before_auth_objects():
    server = Server()
    reconcile(server, gateway("traefik"))
    sent = reconcile(server, INGRESS)
    assert sent[0] == ("APPLY", "Ingress", "nb.jupyter")
    assert [(v, k) for v, k, _ in sent[1:3]] == [("DELETE", "HTTPRoute"), ("DELETE", "Middleware")]
    assert {k for k, _ in server.objects} == {"Pod", "Service", "Ingress", "NetworkPolicy"}
    sent = reconcile(server, gateway("envoy-gateway"))
    assert [(v, k) for v, k, _ in sent if k != "ToolRun/status"] == [
        ("APPLY", "SecurityPolicy"), ("APPLY", "HTTPRoute"), ("DELETE", "Ingress")]
    sent = reconcile(server, gateway("traefik"))  # the HTTPRoute changes its filter, same name
    assert [(v, k) for v, k, _ in sent if k != "ToolRun/status"] == [
        ("APPLY", "Middleware"), ("APPLY", "HTTPRoute"), ("DELETE", "SecurityPolicy")]
    assert reconcile(server, gateway("traefik")) == []


def test_an_auth_object_stays_while_a_route_that_may_need_it_is_not_as_desired():
    server = Server()
    reconcile(server, gateway("envoy-gateway"))
    # To traefik: the route keeps relying on its SecurityPolicy until it is rewritten.
    server.failing.add(("APPLY", "HTTPRoute"))
    with pytest.raises(RetryLater):
        reconcile(server, gateway("traefik"))
    assert ("SecurityPolicy", "nb.jupyter") in server.objects
    # An endpoint removed: the route's delete fails, so its SecurityPolicy stays.
    server.failing = {("DELETE", "HTTPRoute")}
    ssh_only = live_run(endpoints=[{"name": "ssh", "port": 22, "protocol": "ssh"}])
    with pytest.raises(RetryLater, match="deleting HTTPRoute"):
        reconcile(server, gateway("envoy-gateway"), run=ssh_only)
    assert ("SecurityPolicy", "nb.jupyter") in server.objects and ("HTTPRoute", "nb.jupyter") in server.objects
    server.failing.clear()
    sent = reconcile(server, gateway("envoy-gateway"), run=ssh_only)
    deleted = [k for v, k, _ in sent if v == "DELETE"]
    assert deleted[0] == "HTTPRoute" and sorted(deleted[1:]) == ["Middleware", "SecurityPolicy"]


@pytest.mark.parametrize("auth", FLAVOURS)
def test_a_run_that_lost_its_host_gets_neither_route_nor_auth_object(auth):
    server = Server()
    reconcile(server, gateway(auth))
    holder = live_run(name="older")
    sent = reconcile(server, gateway(auth), host_owner=holder)
    deleted = [k for v, k, _ in sent if v == "DELETE"]
    assert deleted == ["HTTPRoute", *([COMPANION[auth]] if COMPANION[auth] else [])]
    assert not [s for s in sent if s[0] == "APPLY"]
    assert server.run_status["conditions"][0]["reason"] == "FriendlyNameConflict"


# --- the handlers ------------------------------------------------------------------------------


def test_a_route_status_written_by_the_gateway_controller_is_no_reason_to_reconcile():
    from toolshare.controller import children

    run = live_run()
    route = as_served(finish_child(next(c for c in render.render_children(run, [], gateway(), NOW) if c["kind"] == "HTTPRoute"), run))
    cached = unpack(pack(route))
    status_only = copy.deepcopy(route)
    status_only["metadata"]["resourceVersion"] = "43"
    status_only["status"]["parents"][0]["conditions"][0]["status"] = "False"
    assert children._status_only(cached, status_only)
    for change in (("metadata", "annotations", "toolshare.dev/allowed-users"), ("metadata", "labels", "toolshare.dev/endpoint"),
                   ("spec", "hostnames", 0)):
        edited = copy.deepcopy(status_only)
        set_path(edited, change, "someone-else")
        assert not children._status_only(cached, edited), change
    assert {"httproutes", "middlewares", "securitypolicies"} == children.STATUS_OF_OTHERS


def test_a_child_we_deleted_is_not_deleted_again_before_its_event_comes():
    """Switching backends deletes a route, then its auth object; the route's DELETED event queues a
    reconcile that may run before the auth object's event: it must not delete that again."""
    server = Server()
    reconcile(server, gateway("traefik"))
    held = {o["metadata"]["uid"]: 7 for o in server.objects.values()}  # what the cache holds
    reconciler = Reconciler(server, INGRESS)
    reconciler.written.version = lambda uid: held.get(uid, 0)
    cached = server.children()
    run = copy.deepcopy(live_run())
    run["status"] = copy.deepcopy(server.run_status)
    server.sent.clear()
    asyncio.run(reconciler.reconcile_run(run, [], {"nb": run}, cached, None, NOW))
    assert [(v, k) for v, k, _ in server.sent if v == "DELETE"] == [("DELETE", "HTTPRoute"), ("DELETE", "Middleware")]
    # The route's DELETED event has come, the Middleware's not yet: the next reconcile deletes nothing.
    reconciler.written.deleted(cached[("HTTPRoute", "nb.jupyter")])
    del cached[("HTTPRoute", "nb.jupyter")]
    server.sent.clear()
    asyncio.run(reconciler.reconcile_run(run, [], {"nb": run}, {**server.children(), **{
        k: v for k, v in cached.items() if k[0] == "Middleware"}}, None, NOW))
    assert [s for s in server.sent if s[0] == "DELETE"] == []
    # Its event comes: forgotten. Had it never come (a relist found it gone), a sweep forgets it too.
    middleware = next(v for k, v in cached.items() if k[0] == "Middleware")
    assert reconciler.written.already_deleted(middleware)
    held.pop(middleware["metadata"]["uid"])
    reconciler.written.sweep()
    assert not reconciler.written.already_deleted(middleware) and reconciler.written._gone == {}


class Events:
    def __init__(self):
        self.posted: list[tuple[str, str, str]] = []

    def post(self, obj, type_, reason, message):
        self.posted.append((obj["metadata"]["name"], reason, message))


def test_a_template_change_replaces_the_pod_and_says_so():
    server, events = Server(), Events()
    reconcile(server, INGRESS)
    run = live_run()
    run["spec"]["template"] = {"nodeSelector": {"gpu": "a100"}}
    reconciler = Reconciler(server, INGRESS, events=events)
    run["status"] = copy.deepcopy(server.run_status)
    server.sent.clear()
    asyncio.run(reconciler.reconcile_run(run, [], {"nb": run}, server.children(), None, NOW))
    assert ("DELETE", "Pod", "nb") in server.sent
    assert events.posted == [("nb", "PodReplaced", "the run's spec or template changed: Pod nb is replaced "
                                                   "(what it kept outside its volumes is gone)")]
    # The next reconcile creates the new Pod, and posts nothing more.
    asyncio.run(reconciler.reconcile_run(run, [], {"nb": run}, server.children(), None, NOW))
    assert server.objects[("Pod", "nb")]["spec"]["nodeSelector"] == {"gpu": "a100"}
    assert len(events.posted) == 1


def test_a_refused_pod_says_why_on_tool_ready():
    server = Server()

    async def refuse(method, path, body=None, query=None, content_type="", kind=""):
        if kind == "Pod":
            raise ApiError(403, '{"kind":"Status","message":"pods \\"nb\\" is forbidden: violates PodSecurity '
                                '\\"restricted:latest\\": runAsNonRoot != true"}')
        return await Server.arequest(server, method, path, body, query, content_type, kind)

    server.arequest = refuse
    with pytest.raises(RetryLater, match="writing Pod nb: pods \"nb\" is forbidden"):
        reconcile(server, INGRESS)
    conditions = {c["type"]: c for c in server.run_status["conditions"]}
    assert conditions["Ready"]["reason"] == "ApplyFailed"
    assert (conditions["ToolReady"]["reason"], conditions["ToolReady"]["message"]) == (
        "PodRefused", 'Pod nb cannot be created: pods "nb" is forbidden: violates PodSecurity '
                      '"restricted:latest": runAsNonRoot != true')
