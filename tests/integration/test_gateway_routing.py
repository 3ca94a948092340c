"""The Gateway API backend through a real implementation: Traefik serving the operator's HTTPRoutes.

For this module the session's operator (ingress mode) hands the cluster over to one started with
TOOLSHARE_ROUTING=gateway, TOOLSHARE_GATEWAY_AUTH=traefik, attaching every route to the router's
Gateway (toolshare-router/toolshare, Traefik's `web` entry point): each HTTP endpoint gets an
HTTPRoute whose ExtensionRef filter names a Traefik Middleware (forwardAuth to the gate), and
Traefik, reading both through its Gateway API and CRD providers, routes to the tool Pod on the node.
"""

from __future__ import annotations

import json
import urllib.parse

import kubernetes
import pytest

from tests.support import rbac
from tests.support.install import resume_session_operator, start_operator
from tests.support.objects import Toolshare, runshare
from tests.support.routing import through
from tests.support.tools import echo_run, tool_ready
from tests.support.wait import wait_for
from toolshare.local import traefik

GATEWAY = f"{traefik.NAMESPACE}/{traefik.GATEWAY}"
SIGN_IN_COOKIES = "_oauth2_proxy=c2Vzc2lvbg; _oauth2_proxy_1=c3BsaXQ"


@pytest.fixture(scope="module")
def gateway_operator(cluster, operator, router, gate_port, tmp_path_factory):
    """The operator in gateway mode instead of the session's, for this module only."""
    operator.stop()
    proc = None
    try:
        proc = start_operator(cluster, tmp_path_factory.mktemp("gateway-operator"), env={
            "TOOLSHARE_GATE_URL": f"http://127.0.0.1:{gate_port}", "TOOLSHARE_ROUTING": "gateway",
            "TOOLSHARE_GATEWAY": GATEWAY, "TOOLSHARE_GATEWAY_AUTH": "traefik"})
        yield proc
    finally:
        if proc is not None:
            proc.stop()
        rbac.remove_gateway(cluster)  # back to the session's installation: ingress mode
        resume_session_operator(cluster, operator)


def _routes(client, namespace: str, plural: str, group: str, version: str) -> list[dict]:
    api = kubernetes.client.CustomObjectsApi(client)
    return api.list_namespaced_custom_object(group, version, namespace, plural,
                                             label_selector="toolshare.dev/run=web")["items"]


def test_traefik_serves_the_operators_httproutes_to_exactly_who_the_gate_allows(
        gateway_operator, gate, router, issuer, cluster, namespace):
    client = cluster.client()
    ts = Toolshare(client, namespace)
    ts.create(echo_run("web", "notebook"))
    wait_for(lambda: tool_ready(ts, "web"), timeout=180, what="web's tool ready on the node")
    route = wait_for(lambda: (_routes(client, namespace, "httproutes", "gateway.networking.k8s.io", "v1") or [None])[0],
                     what="the HTTPRoute of web")
    # One route, for the HTTP endpoint only (the SSH endpoint has none), attached to the Gateway,
    # its filter naming the Middleware that asks the gate; no Ingress.
    assert [r["metadata"]["labels"]["toolshare.dev/endpoint"]
            for r in _routes(client, namespace, "httproutes", "gateway.networking.k8s.io", "v1")] == ["lab"]
    assert route["spec"]["parentRefs"][0]["namespace"] == traefik.NAMESPACE
    assert route["spec"]["parentRefs"][0]["name"] == traefik.GATEWAY
    ref = route["spec"]["rules"][0]["filters"][0]["extensionRef"]
    middleware = next(m for m in _routes(client, namespace, "middlewares", "traefik.io", "v1alpha1")
                      if m["metadata"]["name"] == ref["name"])
    assert middleware["spec"]["forwardAuth"]["address"].endswith(f"/check/{namespace}/web/lab")
    assert ts.ingresses("web") == {}
    uid = ts.get("toolruns", "web")["metadata"]["uid"]
    assert [o["uid"] for o in route["metadata"]["ownerReferences"]] == [uid]  # gone with the run
    assert [o["uid"] for o in middleware["metadata"]["ownerReferences"]] == [uid]
    host = route["spec"]["hostnames"][0]

    def visit(person, extra=None, path="/lab/tree"):
        return through(router, host, path, issuer.token(person) if person else None, extra)

    wait_for(lambda: visit("alice")[0] == 200, what="alice through Traefik's Gateway")
    assert visit("alice")[2] == "hello from notebook to alice at /lab/tree\n"
    assert visit("bob")[0] == 403
    status, headers, _ = visit(None, path="/lab/tree?x=1")
    assert status == 302 and headers["Location"] == (
        "https://auth.toolshare.localhost/oauth2/start?rd=http://" + host + urllib.parse.quote("/lab/tree?x=1", safe=""))

    ts.create(runshare("bob-in", run="web", users=["bob"]))
    wait_for(lambda: visit("bob")[0] == 200, what="bob let in after the share")
    # The caller's credentials stop at the gate here too.
    status, _, body = visit("bob", {"Cookie": f"{SIGN_IN_COOKIES}; theme=dark"}, path="/lab/tree?echo=headers")
    seen = {k.lower(): v for k, v in json.loads(body)}
    assert status == 200 and "authorization" not in seen and seen["cookie"] == "theme=dark"
    assert seen["x-auth-request-user"] == "bob"
    ts.delete("runshares", "bob-in")
    wait_for(lambda: visit("bob")[0] == 403, what="bob refused after the unshare")
    assert visit("alice")[0] == 200
