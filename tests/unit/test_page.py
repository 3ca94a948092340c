"""The owner's side of the page: forms to writes, the anti-CSRF token, the owner view, the markup."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.test_gate import _markup
from toolshare.gate import csrf, forms, owner
from toolshare.gate.page import CSP, render_page
from toolshare.gate.verdict import Identity
from toolshare.gate.writes import impersonation_headers
from toolshare.settings import Settings
from toolshare.sharing import ShareInputError, managed_by

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.timezone.utc)
HOSTILE = [e["value"] * e.get("repeat", 1)
           for e in yaml.safe_load((Path(__file__).parents[1] / "data" / "hostile_principals.yaml").read_text())]
ALICE = Identity("alice", "alice@example.org", ("lab",))


def _run(name="nb", ns="team", owner_="alice", endpoints=None):
    return {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun",
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "creationTimestamp": "2026-12-01T00:00:00Z"},
            "spec": {"owner": owner_, "image": "registry.example.org/team/lab",
                     "endpoints": endpoints or [{"name": "lab", "port": 8888, "protocol": "http", "path": "/lab"},
                                                {"name": "api", "port": 9000, "protocol": "http", "path": "/api"},
                                                {"name": "ssh", "port": 22, "protocol": "ssh"}]}}


def _share(name="nb-share", users=("bob",), groups=(), rv="7", **meta):
    spec = {"runRef": {"name": "nb"}, "users": list(users)}
    if groups:
        spec["groups"] = list(groups)
    return {"apiVersion": "toolshare.dev/v1alpha1", "kind": "RunShare",
            "metadata": {"name": name, "namespace": "team", "uid": "u1", "resourceVersion": rv, "generation": 2,
                         "annotations": {"toolshare.dev/shared-by": "alice"}, **meta}, "spec": spec}


# --- forms --------------------------------------------------------------------------------------


def test_the_add_form_becomes_one_runshare_create():
    w = forms.add_run_share({"users": "bob, carol@example.org,bob", "groups": "lab", "endpoints": ["lab"],
                             "expires": "8h"}, _run(), lambda name: False, NOW)
    assert (w.method, w.path) == ("POST", "/apis/toolshare.dev/v1alpha1/namespaces/team/runshares?fieldManager=toolshare-page")
    assert w.body["metadata"]["namespace"] == "team" and w.body["metadata"]["name"].startswith("nb-share-")
    assert w.body["spec"] == {"runRef": {"name": "nb"}, "users": ["bob", "carol@example.org"], "groups": ["lab"],
                              "endpoints": ["lab"], "expiresAt": "2026-12-03T20:00:00Z"}
    assert w.what == "share nb with bob, carol@example.org, group lab"


def test_a_second_share_of_the_same_endpoints_is_named_by_the_server():
    w = forms.add_run_share({"users": "dave"}, _run(), lambda name: name == "nb-share", NOW)
    assert w.body["metadata"] == {"generateName": "nb-share-", "namespace": "team"} and w.name is None


@pytest.mark.parametrize("form, message", [
    ({}, "give at least one user (Users) or group (Groups)"),
    ({"users": "bob", "endpoints": ["ssh"]}, "Endpoints 'ssh': nb has no HTTP endpoint of that name (SSH is never shared)"),
    ({"users": "bob", "endpoints": ["x" * 500]}, "Endpoints"),
    ({"users": "bob", "expires": "yesterday"}, "Expires 'yesterday': give a duration"),
    ({"users": "bob", "expires": "2020-01-01T00:00:00Z"}, "is in the past"),
    ({"users": ",".join(f"u{i}" for i in range(257))}, "Users: at most 256 names"),
    ({"groups": "-lab"}, "Groups '-lab': principal '-lab' does not start with a letter or digit"),
])
def test_bad_input_is_refused_naming_the_field_and_the_rule(form, message):
    with pytest.raises(ShareInputError, match=None) as e:
        forms.add_run_share(form, _run(), lambda name: False, NOW)
    assert message in str(e.value)


# The corpus values that the box reads as a list of good names (commas separate, spaces around
# them do not count): each of those names passes the grammar on its own. Every other is refused.
AS_LISTS = {" mallory": ["mallory"], "mallory ": ["mallory"], "mallory,admin": ["mallory", "admin"],
            "mallory, system:masters": ["mallory", "system:masters"]}


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_principals_never_leave_the_page(value):
    for field in ("users", "groups"):
        if value in AS_LISTS:
            w = forms.add_run_share({field: value}, _run(), lambda name: False, NOW)
            assert w.body["spec"][field] == sorted(AS_LISTS[value])
            continue
        with pytest.raises(ShareInputError) as e:
            forms.add_run_share({field: value}, _run(), lambda name: False, NOW)
        assert str(e.value).startswith(forms.LABELS[field]) or str(e.value).startswith("give at least one")
        with pytest.raises(ShareInputError):
            forms.add_image_share({"image": "registry.example.org/alice/lab", "namespace": "team", field: value},
                                  "alice")
    assert set(AS_LISTS) <= set(HOSTILE)


def test_removing_one_person_is_a_patch_conditional_on_the_spec_shown():
    w = forms.remove(_share(users=("bob", "carol"), groups=("lab",)), "user", "bob")
    assert (w.method, w.content_type) == ("PATCH", "application/json-patch+json")
    # generation, not resourceVersion: the operator's status writes do not make it stale
    assert w.body == [{"op": "test", "path": "/metadata/generation", "value": 2},
                      {"op": "replace", "path": "/spec/users", "value": ["carol"]}]
    w = forms.remove(_share(users=("bob",), groups=("lab",)), "user", "bob")
    assert w.body[1:] == [{"op": "remove", "path": "/spec/users"}]


def test_removing_the_last_person_deletes_the_share_with_preconditions():
    w = forms.remove(_share(users=("bob",)), "user", "bob")
    assert (w.method, w.path) == ("DELETE", "/apis/toolshare.dev/v1alpha1/namespaces/team/runshares/nb-share")
    assert w.body["preconditions"] == {"uid": "u1", "resourceVersion": "7"}


def test_someone_not_in_the_share_and_unknown_kinds_are_refused():
    with pytest.raises(ShareInputError, match="'dave' is not in 'nb-share'"):
        forms.remove(_share(), "user", "dave")
    with pytest.raises(ShareInputError, match="must be user or group"):
        forms.remove(_share(), "serviceaccount", "bob")


@pytest.mark.parametrize("meta, tool", [
    ({"annotations": {"argocd.argoproj.io/tracking-id": "app:toolshare.dev/RunShare:team/nb-share"}}, "Argo CD"),
    ({"labels": {"kustomize.toolkit.fluxcd.io/name": "tenants"}}, "Flux"),
    ({"labels": {"app.kubernetes.io/managed-by": "Helm"}}, "Helm"),
])
def test_a_share_a_gitops_tool_owns_is_not_changed_from_the_page(meta, tool):
    share = _share(**meta)
    if "annotations" in meta:
        share["metadata"]["annotations"].update(meta["annotations"])
    assert managed_by(share) == tool
    for change in (lambda: forms.remove(share, "user", "bob"), lambda: forms.delete(share)):
        with pytest.raises(ShareInputError, match=f"managed by {tool}"):
            change()


def test_the_image_form_becomes_one_imageshare_by_the_signed_in_owner():
    w = forms.add_image_share({"image": " registry.example.org/alice/lab:4.2 ", "namespace": "team",
                               "users": "bob", "groups": ""}, "alice")
    assert w.body["metadata"] == {"generateName": "lab-", "namespace": "team"}
    assert w.body["spec"] == {"image": "registry.example.org/alice/lab:4.2", "owner": "alice", "users": ["bob"]}
    for bad, field in (({"image": "a b", "namespace": "team", "users": "bob"}, "Image"),
                       ({"image": "x/y", "namespace": "Team!", "users": "bob"}, "Namespace")):
        with pytest.raises(ShareInputError, match=f"^{field} "):
            forms.add_image_share(bad, "alice")


def test_system_names_are_never_impersonated():
    headers = impersonation_headers(Identity("alice", "", ("lab", "system:masters", "system:nodes")))
    assert headers == [("Impersonate-User", "alice"), ("Impersonate-Group", "lab")]
    for user in ("bad user", "system:kube-controller-manager", "system:serviceaccount:kube-system:default"):
        with pytest.raises(ValueError, match="not a person's name"):
            impersonation_headers(Identity(user, "", ()))


# --- anti-CSRF --------------------------------------------------------------------------------------


def test_the_token_is_bound_to_the_session_and_the_user():
    cookies = ["_oauth2_proxy_1=b; theme=dark", "_oauth2_proxy_0=a; _oauth2_proxy_csrf=x"]
    cred = csrf.credential({}, cookies, "_oauth2_proxy")
    assert cred == "_oauth2_proxy_0=a; _oauth2_proxy_1=b"  # the tool's cookies and the sign-in csrf are not part
    token = csrf.token(cred, "alice")
    assert csrf.valid(token, cred, "alice")
    assert not csrf.valid(token, cred, "carol")
    assert not csrf.valid(token, csrf.credential({}, ["_oauth2_proxy_0=z; _oauth2_proxy_1=b"], "_oauth2_proxy"), "alice")
    assert not csrf.valid("", cred, "alice") and not csrf.valid(None, cred, "alice") and not csrf.valid(token, None, "alice")
    assert csrf.credential({"Authorization": "Bearer t"}, [], "_oauth2_proxy") == "Bearer t"
    assert csrf.credential({}, ["theme=dark"], "_oauth2_proxy") is None


@pytest.mark.parametrize("headers, refused", [
    ({}, False),
    ({"Origin": "http://toolshare.example", "Sec-Fetch-Site": "same-origin"}, False),
    ({"Origin": "http://evil.example"}, True),
    ({"Origin": "null"}, True),
    ({"Sec-Fetch-Site": "cross-site"}, True),
    ({"Sec-Fetch-Site": "same-site"}, True),
])
def test_writes_come_from_the_pages_own_origin(headers, refused):
    assert (csrf.cross_site(headers, "toolshare.example") is not None) == refused


# --- the owner view -----------------------------------------------------------------------------


def _keys(runs):
    from toolshare.state.views import toolrun_keys_by_owner

    return [toolrun_keys_by_owner(r["metadata"]["namespace"], r["metadata"]["name"], r["spec"])["alice"] for r in runs]


def _run_of(runs):
    return {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in runs}.get


def _owner_view(runs, shares=(), query="", page=1, image_shares=()):
    return owner.owner_view(ALICE, _keys(runs), lambda ns, name: _run_of(runs)((ns, name)),
                            lambda run: (list(shares), {r["metadata"]["name"]: r for r in runs}),
                            [s for s in image_shares if s["spec"]["owner"] == "alice"], image_shares,
                            Settings.from_env({}), NOW, query=query, page=page)


def test_a_thousand_runs_are_paged_and_searched():
    runs = [_run(f"run-{i:04d}") for i in range(1000)]
    asked = []
    view = owner.owner_view(ALICE, _keys(runs), lambda ns, name: _run_of(runs)((ns, name)),
                            lambda run: asked.append(run["metadata"]["name"]) or ([], {}), [], [],
                            Settings.from_env({}), NOW, page=3)
    assert (view["owned"], view["total"], view["pages"], view["page"]) == (1000, 1000, 50, 3)
    assert [r["name"] for r in view["runs"]] == [f"run-{i:04d}" for i in range(40, 60)]
    assert asked == [r["name"] for r in view["runs"]]  # only the shown page's shares are looked up
    found = _owner_view(runs, query="RUN-09")
    assert found["total"] == 100 and found["runs"][0]["name"] == "run-0900"
    assert _owner_view(runs, page=99)["page"] == 50


def test_each_run_shows_its_endpoints_state_and_shares():
    run = _run()
    run["status"] = {"conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled"},
                                    {"type": "ToolReady", "status": "True", "reason": "Running", "message": "ok"}]}
    expired = _share("old", users=("dave",))
    expired["spec"]["expiresAt"] = "2026-01-01T00:00:00Z"
    view = _owner_view([run], shares=[_share(), expired])
    [r] = view["runs"]
    assert r["state"] == "Running" and [e["name"] for e in r["endpoints"]] == ["lab", "api"]
    assert all(e["url"].startswith("http://nb-team.") for e in r["endpoints"])
    assert [(s["name"], s["users"], s["state"]) for s in r["shares"]] == [("nb-share", ["bob"], "Active"),
                                                                          ("old", ["dave"], "Expired")]


def test_images_show_whose_claim_holds():
    mine = {"kind": "ImageShare", "metadata": {"name": "lab", "namespace": "team", "resourceVersion": "3",
                                               "creationTimestamp": "2026-12-02T00:00:00Z"},
            "spec": {"image": "registry.example.org/alice/lab", "owner": "alice", "users": ["bob"]}}
    older = {"kind": "ImageShare", "metadata": {"name": "x", "namespace": "other", "creationTimestamp": "2026-11-01T00:00:00Z"},
             "spec": {"image": "registry.example.org/carol/tool", "owner": "carol", "groups": ["lab"]}}
    late = {"kind": "ImageShare", "metadata": {"name": "late", "namespace": "team", "creationTimestamp": "2026-12-02T00:00:00Z"},
            "spec": {"image": "registry.example.org/carol/tool", "owner": "alice", "users": ["bob"]}}
    view = _owner_view([], image_shares=[mine, older, late])
    assert [(i["name"], i["claimed"], i["claimedBy"]) for i in view["images"]] == [
        ("lab", True, "alice"), ("late", False, "carol")]
    assert owner.images_shared_with(ALICE, [mine, older, late]) == [
        {"image": "registry.example.org/carol/tool", "owner": "carol", "via": "group:lab"}]


# --- the markup -----------------------------------------------------------------------------------


def _page(text: str) -> str:
    run = {"namespace": "team", "name": "nb", "state": text, "why": text,
           "endpoints": [{"name": "lab", "url": "http://nb-team.example/" + text}, {"name": text, "url": "javascript:x"}],
           "shares": [{"namespace": "team", "name": text, "generation": text, "users": [text], "groups": [text],
                       "endpoints": [text], "expiresAt": text, "selector": False, "state": text, "message": text,
                       "managedBy": None, "sharedBy": text}]}
    view = {"user": text, "email": text, "groups": [text], "owned": [], "sharedWithMe": [],
            "imagesSharedWithMe": [{"image": text, "owner": text, "via": "user"}]}
    own = {"runs": [run], "total": 1, "owned": 1, "page": 1, "pages": 1, "query": text, "namespaces": [text],
           "images": [{"namespace": "team", "name": text, "generation": text, "image": text, "claimed": True,
                       "claimedBy": text, "users": [text], "groups": [], "managedBy": None}]}
    return render_page(view, own, csrf_token=text, error=text, form_for=("team", "nb"),
                       form={"users": text, "groups": text, "expires": text})


@given(st.text(min_size=1, max_size=40))
def test_the_owner_page_escapes_every_value(text):
    html = _page(text)
    assert _markup(html) == _markup(_page("x"))
    assert 'href="javascript:' not in html


def test_every_control_has_a_label_and_the_page_has_no_inline_script_or_style():
    html = _page("x")
    assert "<script>" not in html and "style=" not in html and "<style" not in html
    tags = _markup(html)
    inputs = [t for t in tags if t[0] == "start" and t[1] == "input" and "type" in t[2]]
    assert inputs
    assert "script-src 'self'" in CSP and "form-action 'self'" in CSP and "frame-ancestors 'none'" in CSP
    for attr in ('for="share-team-nb-users"', 'aria-label="Stop sharing nb with x"', 'aria-label="Copy the link to lab"'):
        assert attr in html
