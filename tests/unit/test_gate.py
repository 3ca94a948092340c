"""The gate's pure parts: the verdict, identity headers, Shared with me, the page, the watch."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from hypothesis import given, strategies as st

from toolshare import access, render
from toolshare.gate.identity import (Claims, IdentityRefused, IdentityUnavailable, forwarded_headers,
                                     identity_from_answer)
from toolshare.gate.page import render_page
from toolshare.gate.shared import shared_with_me
from toolshare.gate.verdict import Identity, verdict
from toolshare.policy import Policy
from toolshare.settings import Settings

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.timezone.utc)
SETTINGS = Settings()
POLICY = Policy()


def _run(name="nb", owner="alice", endpoints=None):
    return {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun",
            "metadata": {"name": name, "namespace": "lab", "uid": "u1"},
            "spec": {"owner": owner, "image": "img", "endpoints": endpoints or [
                {"name": "lab", "port": 8888, "protocol": "http"},
                {"name": "api", "port": 9000, "protocol": "http", "path": "/api"}]}}


def _share(name, users=(), groups=(), endpoints=None, expires=None, run="nb", by="alice"):
    spec = {"runRef": {"name": run}, "users": list(users), "groups": list(groups)}
    if endpoints:
        spec["endpoints"] = endpoints
    if expires:
        spec["expiresAt"] = expires
    return {"metadata": {"name": name, "namespace": "lab", "creationTimestamp": "2026-11-22T10:00:00Z",
                         "annotations": {"toolshare.dev/shared-by": by}},
            "spec": spec, "status": {"runs": [run]}}


def _verdicts(run, shares, endpoint, now=NOW):
    return [verdict(who, run, endpoint, shares, {"nb": run}, now, POLICY) for who in (ALICE, BOB, CAROL, DAVE, None)]


ALICE = Identity("alice", "alice@x", ("lab", "data-science"))
BOB = Identity("bob", "bob@x", ("lab",))
CAROL = Identity("carol", "carol@x", ("guests",))
DAVE = Identity("dave", "dave@x", ("visitors",))


def test_the_gate_decides_what_the_renderer_writes():
    shares = [_share("s", users=["bob"], groups=["guests"], endpoints=["api"])]
    assert _verdicts(_run(), shares, "api") == [202, 202, 202, 403, 401]
    assert _verdicts(_run(), shares, "lab") == [202, 403, 403, 403, 401]
    # The same answer the Ingress annotations carry, from the same function.
    ingress = {i["metadata"]["labels"]["toolshare.dev/endpoint"]: i["metadata"]["annotations"]
               for i in render.render_ingresses(_run(), shares, SETTINGS, NOW, policy=POLICY)}
    assert ingress["api"][render.ANN_USERS] == "bob" and ingress["lab"][render.ANN_USERS] == ""


def test_expired_shares_grant_nothing_by_the_gates_own_clock():
    shares = [_share("s", users=["bob"], expires="2026-11-22T12:00:00Z")]
    assert _verdicts(_run(), shares, "lab", NOW - dt.timedelta(seconds=1))[1] == 202
    assert _verdicts(_run(), shares, "lab", NOW)[1] == 403


def test_a_share_by_someone_who_may_not_share_grants_nothing():
    # bob named himself on alice's run: the recorded sharer is re-checked, as the operator does.
    assert _verdicts(_run(), [_share("s", users=["bob"], by="bob")], "lab")[1] == 403
    assert _verdicts(_run(), [_share("s", users=["bob"], by="")], "lab")[1] == 403


def test_unknown_runs_and_endpoints_look_like_forbidden_ones():
    assert verdict(BOB, None, "lab", [], {}, NOW) == 403
    assert verdict(None, None, "lab", [], {}, NOW) == 401
    assert _verdicts(_run(), [_share("s", users=["bob"])], "nosuch")[1] == 403
    ssh = _run(endpoints=[{"name": "ssh", "port": 22, "protocol": "ssh"}])
    assert _verdicts(ssh, [_share("s", users=["bob"])], "ssh")[:2] == [403, 403]  # not even the owner


def test_the_verdict_is_access_may_reach():
    shares = [_share("s", groups=["lab"], endpoints=["lab"])]
    for who in (ALICE, BOB, CAROL, DAVE):
        for ep in ("lab", "api"):
            expected = access.may_reach(_run(), ep, shares, who.user, who.groups, NOW, {"nb": _run()}, POLICY)
            assert (verdict(who, _run(), ep, shares, {"nb": _run()}, NOW, POLICY) == 202) is expected


def _answer(**claims) -> dict:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return {"Authorization": f"Bearer e30.{payload}.c2ln", "X-Auth-Request-Groups": "lab,visitors"}


def test_identity_comes_from_the_id_tokens_claims_exactly():
    answer = _answer(preferred_username="bob", email="bob@x", groups=["lab", "guests"], sub="123")
    assert identity_from_answer(answer) == Identity("bob", "bob@x", ("lab", "guests"))
    # Other claims when configured; a group that is one string is one group.
    custom = _answer(upn="bob@corp", roles="lab")
    assert identity_from_answer(custom, Claims(user="upn", groups="roles")) == Identity("bob@corp", "", ("lab",))


def test_identity_is_never_trimmed_split_or_taken_from_another_claim():
    # A group with a comma is not two groups, and matches neither; one with a space is dropped.
    odd = _answer(preferred_username="bob", groups=["visitors,lab", " lab", "lab:ok"])
    assert identity_from_answer(odd).groups == ("lab:ok",)
    for bad in (_answer(preferred_username=" alice"), _answer(sub="alice"), _answer(preferred_username=7),
                _answer(preferred_username="alice,bob")):
        with pytest.raises(IdentityRefused, match="'preferred_username' claim"):
            identity_from_answer(bad)
    with pytest.raises(IdentityUnavailable, match="--set-authorization-header"):
        identity_from_answer({"X-Auth-Request-Preferred-Username": "bob"})
    with pytest.raises(IdentityUnavailable, match="not a JWT"):
        identity_from_answer({"Authorization": "Bearer nonsense"})
    sent = {"Cookie": "c", "Authorization": "Bearer t", "X-Auth-Request-User": "alice", "X-Forwarded-User": "alice"}
    assert forwarded_headers(sent) == {"Cookie": "c", "Authorization": "Bearer t"}


def test_shared_with_me_lists_direct_and_group_shares_with_details():
    shares = [_share("direct", users=["bob"], expires="2026-12-01T00:00:00Z"),
              _share("guests", groups=["guests"], endpoints=["api"]),
              _share("gone", users=["bob"], expires="2026-11-01T00:00:00Z")]
    reached = [(_run(), shares, {"nb": _run()})]

    def view(who, owned=()):
        return shared_with_me(who, owned, reached, SETTINGS, NOW, POLICY)

    bob = view(BOB)
    assert bob["owned"] == [] and [r["name"] for r in bob["sharedWithMe"]] == ["nb"]
    assert [(s["name"], s["via"], s["sharedBy"], s["expiresAt"]) for s in bob["sharedWithMe"][0]["shares"]] == [
        ("direct", "user", "alice", "2026-12-01T00:00:00Z")]
    carol = view(CAROL)
    assert [(e["name"], e["url"]) for e in carol["sharedWithMe"][0]["endpoints"]] == [
        ("api", "http://nb-lab.toolshare.localhost/api")]
    assert carol["sharedWithMe"][0]["shares"][0]["via"] == "group:guests"
    alice = view(ALICE, owned=[_run()])
    assert [r["name"] for r in alice["owned"]] == ["nb"] and alice["sharedWithMe"] == []
    assert view(DAVE)["sharedWithMe"] == []


def _view(text: str) -> dict:
    return {"user": text, "email": text, "groups": [text], "owned": [],
            "sharedWithMe": [{"namespace": text, "name": text, "owner": text,
                              "endpoints": [{"name": text, "url": "javascript:" + text}],
                              "shares": [{"name": text, "via": "user", "sharedBy": text, "since": text,
                                          "expiresAt": text, "endpoints": [text]}]}]}


def _markup(html: str) -> list:
    """The page's element structure: tags and attribute names, in order (text is left out)."""
    from html.parser import HTMLParser

    tags: list = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.append(("start", tag, tuple(name for name, _ in attrs)))

        def handle_endtag(self, tag):
            tags.append(("end", tag))

        def handle_comment(self, data):
            tags.append(("comment",))

    P(convert_charrefs=True).feed(html)
    return tags


@given(st.text(min_size=1, max_size=40))
def test_the_page_escapes_every_value(text):
    # Whatever the values, the page has exactly the structure it has for harmless text: no value
    # can open a tag, close one, add an attribute or a comment.
    html = render_page(_view(text))
    assert _markup(html) == _markup(render_page(_view("x")))
    assert 'href="javascript:' not in html  # only http(s) URLs become links


def test_the_page_escapes_markup():
    view = {"user": "<b>x</b>", "email": "", "groups": [], "owned": [], "sharedWithMe": []}
    assert "&lt;b&gt;x&lt;/b&gt;" in render_page(view) and "<b>x</b>" not in render_page(view)


def test_watch_events_feed_the_store_and_410_means_list_again():
    from toolshare.client.watch import Gone, Reflector

    seen = []
    r = Reflector(None, "/apis/networking.k8s.io/v1/ingresses",
                  on_event=lambda kind, obj: seen.append((kind, obj["metadata"]["name"])))
    r._handle({"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "7"}}})
    r._handle({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}})
    assert seen == [("ADDED", "a")] and r.resource_version == "9"
    with pytest.raises(Gone):
        r._handle({"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}})


def test_the_sign_in_session_cookies_never_reach_the_tool():
    from toolshare.gate.identity import without_session

    headers = ["_oauth2_proxy=a; theme=dark", "_oauth2_proxy_0=b;_oauth2_proxy_csrf=c; _oauth2_proxyx=keep; x=1"]
    assert without_session(headers) == "theme=dark; _oauth2_proxyx=keep; x=1"
    assert without_session(["sess=1; other=2"], "sess") == "other=2"
    assert without_session([]) == ""
    # The router replaces these with the gate's answer: Authorization, absent there, is removed.
    assert {"Authorization", "Cookie"} <= set(render.ingress.AUTH_RESPONSE_HEADERS.split(","))
