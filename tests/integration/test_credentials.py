"""The sharee's credentials stop at the gate: through Traefik reading the operator's Ingress, the tool (a Pod on the node that echoes every header it receives) sees who is calling, the
caller's own cookies, and nothing that signs anyone in: replaying all of it opens nothing."""

from __future__ import annotations

import json

from tests.support.auth import get
from tests.support.objects import Toolshare, runshare
from tests.support.routing import through
from tests.support.tools import echo_run, routed
from tests.support.wait import wait_for

SIGN_IN_COOKIES = "_oauth2_proxy=c2Vzc2lvbg; _oauth2_proxy_1=c3BsaXQ; _oauth2_proxy_csrf=Y3NyZg"


def test_the_tool_never_sees_the_callers_credentials(operator, gate, router, issuer, cluster, namespace):
    ts = Toolshare(cluster.client(), namespace)
    ts.create(echo_run("web", "echo"))
    ts.create(echo_run("other", "echo"))
    ts.create(runshare("bob-in", run="web", users=["bob"]))
    ts.create(runshare("bob-other", run="other", users=["bob"]))
    host = routed(ts, "web")
    path = "/lab/tree?echo=headers"
    token = issuer.token("bob")
    sent = {"Cookie": f"{SIGN_IN_COOKIES}; theme=dark; _xsrf=2|abc"}
    wait_for(lambda: through(router, host, path, token, sent)[0] == 200, what="bob through Traefik")
    status, _, body = through(router, host, path, token, sent)
    seen = {k.lower(): v for k, v in json.loads(body)}
    assert status == 200
    assert "authorization" not in seen
    assert seen["cookie"] == "theme=dark; _xsrf=2|abc"  # the tool's own cookies still pass
    assert seen["x-auth-request-user"] == "bob"

    # Whatever the tool saw, replayed by a tool owner who wants to be bob elsewhere, opens nothing:
    # not the gate for another run shared with bob (once the gate knows that share: bob himself
    # gets in), not this run through the router.
    wait_for(lambda: get(f"{gate.url}/check/{namespace}/other/lab", token)[0] == 202, what="bob into other")
    replay = {k: v for k, v in json.loads(body) if k.lower() not in ("host", "content-length")}
    assert get(f"{gate.url}/check/{namespace}/other/lab", None, replay)[0] == 401
    assert through(router, host, path, None, replay)[0] == 302  # sent to sign in
