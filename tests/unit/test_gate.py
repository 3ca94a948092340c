"""The gate's pure parts: Ingress -> Entry, the verdict, the store, identity headers, the page."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, strategies as st

from toolshare import model, render
from toolshare.gate.allowlist import Entry, Identity, Store, entry_from_ingress, verdict
from toolshare.gate.identity import IdentityUnavailable, forwarded_headers, identity_from_headers
from toolshare.gate.page import render_page
from toolshare.gate.shared import shared_with_me
from toolshare.settings import Settings

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.timezone.utc)
SETTINGS = Settings()


def _run(name="nb", owner="alice", endpoints=None):
    return {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun",
            "metadata": {"name": name, "namespace": "lab", "uid": "u1"},
            "spec": {"owner": owner, "image": "img", "endpoints": endpoints or [
                {"name": "lab", "port": 8888, "protocol": "http"},
                {"name": "api", "port": 9000, "protocol": "http", "path": "/api"}]}}


def _share(name, users=(), groups=(), endpoints=None, expires=None, run="nb"):
    spec = {"runRef": {"name": run}, "users": list(users), "groups": list(groups)}
    if endpoints:
        spec["endpoints"] = endpoints
    if expires:
        spec["expiresAt"] = expires
    return {"metadata": {"name": name, "namespace": "lab", "creationTimestamp": "2026-11-22T10:00:00Z",
                         "annotations": {"toolshare.dev/shared-by": "alice"}},
            "spec": spec, "status": {"runs": [run]}}


def _entries(shares, run=None):
    run = run or _run()
    return {e.endpoint: e for e in map(entry_from_ingress, render.render_ingresses(run, shares, SETTINGS, NOW))}


ALICE = Identity("alice", "alice@x", ("lab", "data-science"))
BOB = Identity("bob", "bob@x", ("lab",))
CAROL = Identity("carol", "carol@x", ("guests",))
DAVE = Identity("dave", "dave@x", ("visitors",))


def test_the_gate_decides_exactly_what_the_renderer_wrote():
    entries = _entries([_share("s", users=["bob"], groups=["guests"], endpoints=["api"])])
    assert [verdict(entries["api"], who) for who in (ALICE, BOB, CAROL, DAVE, None)] == [202, 202, 202, 403, 401]
    assert [verdict(entries["lab"], who) for who in (ALICE, BOB, CAROL, DAVE, None)] == [202, 403, 403, 403, 401]
    assert entries["api"].url == "http://nb-lab.toolshare.localhost/api"


def test_expired_shares_grant_nothing():
    entries = _entries([_share("s", users=["bob"], expires="2026-11-22T11:59:59Z")])
    assert verdict(entries["lab"], BOB) == 403


def test_unknown_is_404_only_for_someone_signed_in():
    assert verdict(None, BOB) == 404
    assert verdict(None, None) == 401


def test_only_operator_ingresses_count():
    ingress = render.render_ingresses(_run(), [], SETTINGS, NOW)[0]
    ingress["metadata"]["labels"][model.LABEL_MANAGED_BY] = "someone-else"
    assert entry_from_ingress(ingress) is None


def test_store_follows_adds_changes_and_deletes():
    store = Store()
    before = render.render_ingresses(_run(), [], SETTINGS, NOW)
    store.replace(before)
    assert len(store) == 2 and verdict(store.get("lab", "nb", "lab"), BOB) == 403
    after = render.render_ingresses(_run(), [_share("s", users=["bob"])], SETTINGS, NOW)
    store.upsert(after[0])
    assert verdict(store.get("lab", "nb", "lab"), BOB) == 202
    store.delete(after[0])
    assert store.get("lab", "nb", "lab") is None and len(store) == 1
    store.replace([])
    assert len(store) == 0


def test_identity_comes_from_oauth2_proxy_headers_only():
    answer = {"X-Auth-Request-User": "sub-123", "X-Auth-Request-Preferred-Username": "bob",
              "X-Auth-Request-Email": "bob@x", "X-Auth-Request-Groups": "lab, guests,"}
    assert identity_from_headers(answer) == Identity("bob", "bob@x", ("lab", "guests"))
    assert identity_from_headers({"X-Auth-Request-User": "bob"}).user == "bob"
    with pytest.raises(IdentityUnavailable):
        identity_from_headers({})
    sent = {"Cookie": "c", "Authorization": "Bearer t", "X-Auth-Request-User": "alice", "X-Forwarded-User": "alice"}
    assert forwarded_headers(sent) == {"Cookie": "c", "Authorization": "Bearer t"}


def test_shared_with_me_lists_direct_and_group_shares_with_details():
    shares = [_share("direct", users=["bob"], expires="2026-12-01T00:00:00Z"),
              _share("guests", groups=["guests"], endpoints=["api"]),
              _share("gone", users=["bob"], expires="2026-11-01T00:00:00Z")]
    entries = list(_entries(shares).values())
    bob = shared_with_me(BOB, entries, shares, NOW)
    assert bob["owned"] == [] and [r["name"] for r in bob["sharedWithMe"]] == ["nb"]
    assert [(s["name"], s["via"], s["sharedBy"], s["expiresAt"]) for s in bob["sharedWithMe"][0]["shares"]] == [
        ("direct", "user", "alice", "2026-12-01T00:00:00Z")]
    carol = shared_with_me(CAROL, entries, shares, NOW)
    assert [e["name"] for e in carol["sharedWithMe"][0]["endpoints"]] == ["api"]
    assert carol["sharedWithMe"][0]["shares"][0]["via"] == "group:guests"
    assert [r["name"] for r in shared_with_me(ALICE, entries, shares, NOW)["owned"]] == ["nb"]
    assert shared_with_me(DAVE, entries, shares, NOW)["sharedWithMe"] == []


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
    from toolshare.gate.watch import Gone, Reflector

    seen = []
    r = Reflector(None, "/apis/networking.k8s.io/v1/ingresses", on_replace=lambda items: None,
                  on_event=lambda kind, obj: seen.append((kind, obj["metadata"]["name"])))
    r._handle({"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "7"}}})
    r._handle({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}})
    assert seen == [("ADDED", "a")] and r.resource_version == "9"
    with pytest.raises(Gone):
        r._handle({"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}})
