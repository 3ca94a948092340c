"""Through a real Ingress controller: Traefik reading the operator's Ingress, asking the gate.

The request goes to the run's host on Traefik; its forwardAuth (made from the Ingress's auth-url
and auth-response-headers by Traefik's ingress-nginx provider) calls the gate, which asks
oauth2-proxy, and either forwards to the tool (a Pod on the node, at the address its EndpointSlice
lists) or returns the gate's answer. Sharing and unsharing change the answer with no change to
any route.
"""

from __future__ import annotations

import urllib.parse

from tests.support.objects import Toolshare, runshare
from tests.support.routing import through
from tests.support.tools import echo_run, routed
from tests.support.wait import wait_for


def test_traefik_with_the_ingress_auth_annotations_lets_in_exactly_who_the_gate_allows(
        operator, gate, router, issuer, cluster, namespace):
    ts = Toolshare(cluster.client(), namespace)
    ts.create(echo_run("web", "notebook"))
    host = routed(ts, "web")

    def visit(person, extra=None, path="/lab/tree"):
        return through(router, host, path, issuer.token(person) if person else None, extra)

    wait_for(lambda: visit("alice")[0] == 200, what="alice through Traefik")
    status, _, body = visit("alice", {"X-Auth-Request-User": "mallory"})
    # The tool learns the user from the gate's answer, not from what the client sent.
    assert status == 200 and body == "hello from notebook to alice at /lab/tree\n"
    assert visit("bob")[0] == 403
    assert visit("dave", {"X-Auth-Request-User": "alice", "X-Auth-Request-Preferred-Username": "alice"})[0] == 403
    # Traefik has no auth-signin: the gate sends the browser to sign in, back to where it was going.
    status, headers, _ = visit(None, path="/lab/tree?x=1")
    assert status == 302
    assert headers["Location"] == ("https://auth.toolshare.localhost/oauth2/start?rd=http://" + host
                                   + urllib.parse.quote("/lab/tree?x=1", safe=""))
    # A host no run holds is routed nowhere.
    assert through(router, "nobody-" + host, "/lab/tree", issuer.token("alice"))[0] == 404

    ts.create(runshare("bob-in", run="web", users=["bob"]))
    wait_for(lambda: visit("bob")[0] == 200, what="bob let in after the share")
    assert visit("bob")[2] == "hello from notebook to bob at /lab/tree\n"
    ts.delete("runshares", "bob-in")
    wait_for(lambda: visit("bob")[0] == 403, what="bob refused after the unshare")
    assert visit("alice")[0] == 200
