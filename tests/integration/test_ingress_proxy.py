"""Through a real reverse proxy: nginx configured from the operator's Ingress, asking the gate.

The request goes to the run's host on nginx; nginx's auth_request calls the Ingress's auth-url
(the gate, which asks oauth2-proxy), and either forwards to the tool (a Pod on the node, reached at
the address its EndpointSlice lists) or refuses. Sharing and
unsharing change the answer with no change to the nginx configuration and no reload.
"""

from __future__ import annotations

from tests.support.auth import get
from tests.support.objects import Toolshare, runshare
from tests.support.tools import echo_run, proxied
from tests.support.wait import wait_for


def test_nginx_with_the_ingress_auth_annotations_lets_in_exactly_who_the_gate_allows(
        operator, gate, issuer, cluster, namespace, tmp_path):
    client = cluster.client()
    ts = Toolshare(client, namespace)
    ts.create(echo_run("web", "notebook"))
    with proxied(ts, client, gate.url, "web", tmp_path) as (nginx, host):
        def visit(person, extra=None, path="/lab/tree"):
            headers = {"Host": host, **(extra or {})}
            return get(f"http://127.0.0.1:{nginx.port}{path}", issuer.token(person) if person else None, headers)

        wait_for(lambda: visit("alice")[0] == 200, what="alice through nginx")
        status, _, body = visit("alice", {"X-Auth-Request-User": "mallory"})
        # The tool learns the user from the gate's answer, not from what the client sent.
        assert status == 200 and body == "hello from notebook to alice at /lab/tree\n"
        assert visit("bob")[0] == 403
        assert visit("dave", {"X-Auth-Request-User": "alice", "X-Auth-Request-Preferred-Username": "alice"})[0] == 403
        status, headers, _ = visit(None)
        assert status == 302
        assert headers["Location"].startswith("https://auth.toolshare.localhost/oauth2/start?rd=")

        ts.create(runshare("bob-in", run="web", users=["bob"]))
        wait_for(lambda: visit("bob")[0] == 200, what="bob let in after the share")
        assert visit("bob")[2] == "hello from notebook to bob at /lab/tree\n"
        ts.delete("runshares", "bob-in")
        wait_for(lambda: visit("bob")[0] == 403, what="bob refused after the unshare")
        assert visit("alice")[0] == 200
