"""Who gets in, through both routing backends a real router serves: the same matrix, twice.

`ingress`: the session's operator writes an ingress-nginx-style Ingress per HTTP endpoint and
Traefik's ingress-nginx provider turns its auth-url / auth-response-headers into forwardAuth.
`gateway`: for this module's second half the session operator hands the cluster over to one
started with TOOLSHARE_ROUTING=gateway, TOOLSHARE_GATEWAY_AUTH=traefik: an HTTPRoute per HTTP
endpoint, attached to the router's Gateway (toolshare-router/toolshare), whose ExtensionRef filter
names a Traefik Middleware (forwardAuth to the gate); Traefik reads both through its Gateway API
and CRD providers. In both, every request goes router -> gate -> oauth2-proxy -> the tool, a Pod on
the node at the address its EndpointSlice lists; sharing and unsharing change the gate's answer,
never a route.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse

import kubernetes
import pytest

from tests.support import rbac
from tests.support.install import resume_session_operator, start_operator
from tests.support.objects import Toolshare, runshare
from tests.support.routing import through
from tests.support.tools import START, tool_ready, web_run, ws_exchange
from tests.support.wait import wait_for
from toolshare.local import traefik

GATEWAY = f"{traefik.NAMESPACE}/{traefik.GATEWAY}"
HTTPROUTE = ("gateway.networking.k8s.io", "v1", "httproutes")
MIDDLEWARE = ("traefik.io", "v1alpha1", "middlewares")
PORTS = {"lab": 8888, "api": 8889}
SIGN_IN_COOKIES = "_oauth2_proxy=c2Vzc2lvbg; _oauth2_proxy_1=c3BsaXQ"


@pytest.fixture(scope="module", params=["ingress", "gateway"])
def backend(request, cluster, operator, gate, router, gate_port, tmp_path_factory):
    """The routing backend the module's tests run under; `gateway` swaps the session's operator
    for a gateway-mode one and back (pytest runs every ingress test first, then every gateway one)."""
    if request.param == "ingress":
        yield request.param
        return
    operator.stop()
    proc = None
    try:
        proc = start_operator(cluster, tmp_path_factory.mktemp("gateway-operator"), env={
            "TOOLSHARE_GATE_URL": f"http://127.0.0.1:{gate_port}", "TOOLSHARE_ROUTING": "gateway",
            "TOOLSHARE_GATEWAY": GATEWAY, "TOOLSHARE_GATEWAY_AUTH": "traefik"})
        yield request.param
    finally:
        if proc is not None:
            proc.stop()
        rbac.remove_gateway(cluster)  # back to the session's installation: ingress mode
        resume_session_operator(cluster, operator)


def _custom(client, namespace: str, kind: tuple[str, str, str], run: str) -> list[dict]:
    group, version, plural = kind
    return kubernetes.client.CustomObjectsApi(client).list_namespaced_custom_object(
        group, version, namespace, plural, label_selector=f"toolshare.dev/run={run}")["items"]


def hosts(backend: str, ts: Toolshare, run: str) -> dict[str, str]:
    """The host of each routed endpoint of `run`, read from what the backend's operator wrote."""
    if backend == "ingress":
        return {e: ing["spec"]["rules"][0]["host"] for e, ing in ts.ingresses(run).items()}
    return {r["metadata"]["labels"]["toolshare.dev/endpoint"]: r["spec"]["hostnames"][0]
            for r in _custom(ts.api.api_client, ts.ns, HTTPROUTE, run)}


def launched(backend: str, ts: Toolshare, run: str) -> dict[str, str]:
    """`run`'s hosts once its tool serves and both HTTP endpoints have their route."""
    wait_for(lambda: tool_ready(ts, run), timeout=START, what=f"{run}'s tool ready on the node")
    wait_for(lambda: set(hosts(backend, ts, run)) == set(PORTS), what=f"{backend} routes for both endpoints of {run}")
    return hosts(backend, ts, run)


def test_the_operator_routes_each_http_endpoint_and_never_ssh(backend, cluster, namespace):
    client = cluster.client()
    ts = Toolshare(client, namespace)
    ts.create(web_run("mx", PORTS))
    launched(backend, ts, "mx")
    uid = ts.get("toolruns", "mx")["metadata"]["uid"]
    ingresses, routes = ts.ingresses("mx"), _custom(client, namespace, HTTPROUTE, "mx")
    if backend == "ingress":
        assert sorted(ingresses) == ["api", "lab"] and routes == []
        return
    # One HTTPRoute per HTTP endpoint (none for SSH), attached to the Gateway, its filter naming the
    # Middleware that asks the gate for that endpoint; no Ingress; both gone with the run.
    assert ingresses == {} and sorted(r["metadata"]["labels"]["toolshare.dev/endpoint"] for r in routes) == ["api", "lab"]
    middlewares = {m["metadata"]["name"]: m for m in _custom(client, namespace, MIDDLEWARE, "mx")}
    for route in routes:
        endpoint = route["metadata"]["labels"]["toolshare.dev/endpoint"]
        assert [(p["namespace"], p["name"]) for p in route["spec"]["parentRefs"]] == [(traefik.NAMESPACE, traefik.GATEWAY)]
        middleware = middlewares[route["spec"]["rules"][0]["filters"][0]["extensionRef"]["name"]]
        assert middleware["spec"]["forwardAuth"]["address"].endswith(f"/check/{namespace}/mx/{endpoint}")
        for obj in (route, middleware):
            assert [o["uid"] for o in obj["metadata"]["ownerReferences"]] == [uid]


def test_exactly_who_the_gate_allows_gets_in_and_the_tool_never_sees_credentials(
        backend, router, issuer, cluster, namespace):
    ts = Toolshare(cluster.client(), namespace)
    ts.create(web_run("mx", PORTS))
    ts.create(runshare("bob-lab", run="mx", users=["bob"], endpoints=["lab"]))
    ts.create(runshare("physics", run="mx", groups=["physics"]))
    host = launched(backend, ts, "mx")

    def visit(endpoint, person, extra=None, path=None, groups=None):
        token = issuer.token(person, groups=groups) if person else None
        return through(router, host[endpoint], path or f"/{endpoint}/tree", token, extra)

    wait_for(lambda: visit("lab", "alice")[0] == 200, what=f"alice through Traefik ({backend})")
    # The tool learns the caller from the gate's answer, never from what the client sent.
    status, _, body = visit("lab", "alice", {"X-Auth-Request-User": "mallory"})
    assert (status, body) == (200, "hello from mx:8888 to alice at /lab/tree\n")
    # Traefik loads each route by itself: the api endpoint's may come a moment after lab's.
    wait_for(lambda: visit("api", "alice")[0] == 200, what=f"the api endpoint routed ({backend})")
    assert visit("api", "alice")[2] == "hello from mx:8889 to alice at /api/tree\n"
    wait_for(lambda: visit("lab", "bob")[0] == 200, what="bob, shared the lab endpoint")
    assert visit("lab", "bob")[2] == "hello from mx:8888 to bob at /lab/tree\n"
    assert visit("api", "bob")[0] == 403  # his share names the lab endpoint only
    wait_for(lambda: visit("api", "erin", groups=("physics",))[0] == 200, what="a member of the shared group")
    assert visit("lab", "erin", groups=("physics",))[0] == 200
    assert visit("lab", "erin", groups=("chemistry",))[0] == 403  # the same person, not in the group
    assert visit("lab", "dave")[0] == 403
    assert visit("lab", "dave", {"X-Auth-Request-User": "alice", "X-Auth-Request-Preferred-Username": "alice"})[0] == 403
    # Not signed in: the gate sends the browser to sign in, back to where it was going (Traefik has
    # no auth-signin of its own).
    status, headers, _ = visit("lab", None, path="/lab/tree?x=1")
    assert status == 302 and headers["Location"] == (
        "https://auth.toolshare.localhost/oauth2/start?rd=http://" + host["lab"]
        + urllib.parse.quote("/lab/tree?x=1", safe=""))
    assert through(router, "nobody-" + host["lab"], "/lab/tree", issuer.token("alice"))[0] == 404
    assert through(router, host["lab"], "/ssh", issuer.token("alice"))[0] == 404  # only the endpoints' paths

    # The caller's credentials stop at the gate: no Authorization, only the tool's own cookies.
    status, _, body = visit("lab", "bob", {"Cookie": f"{SIGN_IN_COOKIES}; theme=dark"}, path="/lab/tree?echo=headers")
    seen = {k.lower(): v for k, v in json.loads(body)}
    assert status == 200 and "authorization" not in seen and seen["cookie"] == "theme=dark"
    assert seen["x-auth-request-user"] == "bob"


def test_unshare_edit_and_expiry_take_people_out(backend, router, issuer, cluster, namespace):
    ts = Toolshare(cluster.client(), namespace)
    ts.create(web_run("mx", PORTS))
    ts.create(runshare("team", run="mx", users=["bob", "carol"]))
    host = launched(backend, ts, "mx")

    def status(person):
        return through(router, host["lab"], "/lab/tree", issuer.token(person))[0]

    wait_for(lambda: status("bob") == 200 and status("carol") == 200, what="bob and carol shared")
    ts.patch("runshares", "team", {"spec": {"users": ["carol"]}})  # edited to drop bob
    wait_for(lambda: status("bob") == 403, what="bob refused once the share no longer names him")
    assert status("carol") == 200
    ts.delete("runshares", "team")
    wait_for(lambda: status("carol") == 403, what="carol refused after the unshare")
    assert status("alice") == 200

    # Expiry: frank's share gets an expiresAt once he is in; the gate ends it then, by itself (no
    # write happens at that moment), and not before.
    ts.create(runshare("brief", run="mx", users=["frank"]))
    wait_for(lambda: status("frank") == 200, what="frank shared")
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)).replace(microsecond=0)
    ts.patch("runshares", "brief", {"spec": {"expiresAt": soon.strftime("%Y-%m-%dT%H:%M:%SZ")}})

    def refused_after_expiry() -> bool:
        refused = status("frank") == 403
        answered = dt.datetime.now(dt.timezone.utc)  # the gate decided before this instant
        assert not (refused and answered < soon), f"frank refused at {answered}, before his share expired at {soon}"
        return refused

    wait_for(refused_after_expiry, timeout=60, what="frank refused once the share expired")
    assert status("alice") == 200


def test_websockets_cross_the_auth_path_for_exactly_who_may(backend, router, issuer, cluster, namespace):
    ts = Toolshare(cluster.client(), namespace)
    ts.create(web_run("mx", PORTS))
    ts.create(runshare("bob-in", run="mx", users=["bob"]))
    host = launched(backend, ts, "mx")["lab"]

    def talk(person, messages=("1 + 1",)):
        return ws_exchange(router.url, host, issuer.token(person) if person else None, list(messages))

    wait_for(lambda: talk("alice")[0] == 101, what="alice's websocket")
    assert talk("alice") == (101, ["alice: 1 + 1"])
    wait_for(lambda: talk("bob")[0] == 101, what="bob's websocket after the share")
    assert talk("bob", ["one", "two"]) == (101, ["bob: one", "bob: two"])
    assert talk("dave")[0] == 403  # (not signed in: the 302 of the HTTP case; aiohttp would follow it)
    ts.delete("runshares", "bob-in")
    wait_for(lambda: talk("bob")[0] == 403, what="bob's websocket refused after the unshare")
    assert talk("alice")[0] == 101
