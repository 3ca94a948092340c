"""Pure admission decisions: owners, who may share, directory, images, hostile requesters."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from toolshare import access, images, model
from toolshare.admission import decisions as admission, directory
from toolshare.admission.decisions import CREATE, UPDATE, Requester
from toolshare.policy import Policy, PolicyError, TrustedApplier, parse_trusted_appliers

ALICE = Requester("alice", ("lab", "data-science", "system:authenticated"))
BOB = Requester("bob", ("lab",))
ADMIN = Requester("root", ("toolshare:admins",))
MASTER = Requester("admin", ("system:masters",))
POLICY = Policy()
NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.timezone.utc)
CORPUS = [e["value"] * e.get("repeat", 1)
          for e in yaml.safe_load((Path(__file__).parents[1] / "data" / "hostile_principals.yaml").read_text())]


def run(name="nb", owner="alice", image="quay.io/jupyter/base-notebook:1", labels=None, ns="ns"):
    spec = {"image": image, "endpoints": [{"name": "lab", "port": 8888, "protocol": "http"}]}
    if owner is not None:
        spec["owner"] = owner
    return {"metadata": {"name": name, "namespace": ns, "labels": labels or {}}, "spec": spec}


def share(name="s", run_name="nb", selector=None, users=("bob",), groups=(), ns="ns", annotations=None):
    spec = {"users": list(users), "groups": list(groups)}
    spec.update({"runSelector": selector} if selector else {"runRef": {"name": run_name}})
    return {"metadata": {"name": name, "namespace": ns, "annotations": annotations or {}}, "spec": spec}


def ishare(image, owner, users=(), groups=(), name="i", ns="ns", created="2026-01-01T00:00:00Z"):
    return {"metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
            "spec": {"image": image, "owner": owner, "users": list(users), "groups": list(groups)}}


# --- owner ---------------------------------------------------------------------------------

def test_owner_is_set_from_the_request_when_absent_and_kept_on_update():
    assert admission.owner_to_set(CREATE, run(owner=None), None, BOB) == "bob"
    assert admission.owner_to_set(CREATE, run(owner="bob"), None, BOB) is None
    assert admission.owner_to_set(UPDATE, run(owner=None), run(owner="alice"), BOB) == "alice"


@pytest.mark.parametrize("req, allowed", [(BOB, False), (ALICE, True), (ADMIN, True), (MASTER, True)])
def test_naming_another_owner_needs_admin(req, allowed):
    problem = admission.owner_problem("ToolRun", CREATE, run(owner="alice"), None, req, POLICY, None)
    assert (problem is None) == allowed
    if not allowed:
        assert "user 'bob' may not create a ToolRun owned by 'alice'" in problem


def test_admin_groups_are_configurable():
    policy = Policy(admin_groups=("platform",))
    assert policy.is_admin(["platform"]) and policy.is_admin(["system:masters"])
    assert not policy.is_admin(["toolshare:admins"])


def test_owner_is_immutable():
    problem = admission.owner_problem("ToolRun", UPDATE, run(owner="bob"), run(owner="alice"), MASTER, POLICY, None)
    assert "spec.owner is immutable" in problem


@pytest.mark.parametrize("bad", CORPUS)
def test_hostile_requester_names_are_refused(bad):
    req = Requester(bad, ())
    assert "your user name cannot own or share" in admission.requester_problem(req, "ToolRun")
    problem = admission.owner_problem("ToolRun", CREATE, run(owner=bad), None, MASTER, POLICY, None)
    assert problem.startswith("spec.owner: principal")
    assert admission.runshare_problem(share(users=[bad]), ALICE, POLICY, {"nb": run()}, [], None).startswith("spec.users")
    assert len(problem) < 600  # shortened, never the whole hostile text


# --- sharing -------------------------------------------------------------------------------

def test_only_the_owner_admins_and_trusted_appliers_share():
    runs = {"nb": run()}
    assert admission.runshare_problem(share(), ALICE, POLICY, runs, [], None) is None
    problem = admission.runshare_problem(share(), BOB, POLICY, runs, [], None)
    assert "user 'bob' may not share ToolRun 'nb': it is owned by 'alice'" in problem
    assert admission.runshare_problem(share(), ADMIN, POLICY, runs, [], None) is None
    argo = Requester("system:serviceaccount:argocd:controller", ("system:serviceaccounts",))
    policy = Policy(trusted_appliers=parse_trusted_appliers("serviceaccount:argocd/controller=ns"))
    assert admission.runshare_problem(share(), argo, policy, runs, [], None) is None
    assert admission.runshare_problem(share(ns="other"), argo, policy, {"nb": run(ns="other")}, [], None)


def test_a_selector_reaching_someone_elses_run_is_refused():
    runs = {"a": run("a", owner="bob", labels={"f": "x"}), "b": run("b", owner="alice", labels={"f": "x"})}
    problem = admission.runshare_problem(share(selector={"matchLabels": {"f": "x"}}), BOB, POLICY, runs, [], None)
    assert "ToolRun 'b': it is owned by 'alice'" in problem


def test_reconciler_does_not_honour_an_unrecorded_or_unallowed_sharer():
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    runs = {"nb": run()}
    unrecorded = share()
    assert access.share_state(unrecorded, runs, now).reason == access.ACTIVE  # no policy: no check
    state = access.share_state(unrecorded, runs, now, POLICY)
    assert state.reason == access.INVALID and "shared-by" in state.message
    by_bob = share(annotations=access.sharer_annotations("bob", ["lab"], POLICY))
    state = access.share_state(by_bob, runs, now, POLICY)
    assert state.reason == access.INVALID and "owned by 'alice'" in state.message
    assert access.access_for(runs["nb"], [by_bob], now, runs, POLICY)["lab"].users == ()
    by_alice = share(annotations=access.sharer_annotations("alice", ALICE.groups, POLICY))
    assert access.share_state(by_alice, runs, now, POLICY).reason == access.ACTIVE
    by_admin = share(annotations=access.sharer_annotations("root", ADMIN.groups, POLICY))
    assert by_admin["metadata"]["annotations"][access.ANN_SHARED_BY_GROUPS] == "toolshare:admins"
    assert access.share_state(by_admin, runs, now, POLICY).reason == access.ACTIVE


def test_only_conferring_groups_are_recorded():
    policy = Policy(trusted_appliers=parse_trusted_appliers("group:flux"))
    assert policy.conferring_groups(["lab", "flux", "system:masters", "a b"]) == ("flux", "system:masters")


@pytest.mark.parametrize("text, expected", [
    ("serviceaccount:argocd/app-controller=team-a,team-b",
     (TrustedApplier("serviceaccount", "argocd/app-controller", ("team-a", "team-b")),)),
    ("group:flux; user:bot@example.org=apps",
     (TrustedApplier("group", "flux"), TrustedApplier("user", "bot@example.org", ("apps",)))),
])
def test_trusted_appliers_format(text, expected):
    assert parse_trusted_appliers(text) == expected
    assert [str(a) for a in expected] == [e for e in (str(a) for a in parse_trusted_appliers(text))]


@pytest.mark.parametrize("text", ["robot", "team:x", "serviceaccount:nons", "user:a b", "group:x=", "user:x=Bad_NS"])
def test_bad_trusted_appliers_name_the_variable(text):
    with pytest.raises(PolicyError, match="TOOLSHARE_TRUSTED_APPLIERS"):
        Policy.from_env({"TOOLSHARE_TRUSTED_APPLIERS": text})


def test_policy_from_env():
    policy = Policy.from_env({"TOOLSHARE_ADMIN_GROUPS": "ops, platform", "TOOLSHARE_DIRECTORY": "toolshare-system/dir",
                              "TOOLSHARE_UNCLAIMED_IMAGES_DENY": "registry.example.org/ *"})
    assert policy.admin_groups == ("ops", "platform") and policy.directory_ref == ("toolshare-system", "dir")
    assert policy.unclaimed_image_deny == ("registry.example.org/", "*")
    with pytest.raises(PolicyError, match="TOOLSHARE_DIRECTORY"):
        Policy.from_env({"TOOLSHARE_DIRECTORY": "nonamespace"})


# --- directory -----------------------------------------------------------------------------

DIRECTORY = directory.parse({"directory.yaml": "users: [alice, bob]\ngroups: {lab: [alice, bob], guests: []}\n"})


def test_directory_refuses_unknown_principals():
    assert admission.runshare_problem(share(users=["bobb"]), ALICE, POLICY, {"nb": run()}, [], DIRECTORY) \
        == "spec.users/groups: user 'bobb' is not registered"
    assert "group 'labb' is not registered" in admission.runshare_problem(
        share(users=[], groups=["labb"]), ALICE, POLICY, {"nb": run()}, [], DIRECTORY)
    assert admission.runshare_problem(share(groups=["lab"]), ALICE, POLICY, {"nb": run()}, [], DIRECTORY) is None
    assert "user 'carol' is not registered" in admission.owner_problem(
        "ToolRun", CREATE, run(owner="carol"), None, MASTER, POLICY, DIRECTORY)
    assert DIRECTORY.groups_of("bob") == ("lab",)


@pytest.mark.parametrize("text", ["users: alice", "[1, 2]", "users: ['a b']", "groups: {lab: ['x;y']}", "users: [\n"])
def test_malformed_directory_is_an_error(text):
    with pytest.raises(directory.DirectoryError):
        directory.parse({"directory.yaml": text})


# --- images --------------------------------------------------------------------------------

@pytest.mark.parametrize("image, repository, tag", [
    ("busybox", "docker.io/library/busybox", None),
    ("busybox:1.37", "docker.io/library/busybox", "1.37"),
    ("jupyter/base-notebook:2024", "docker.io/jupyter/base-notebook", "2024"),
    ("Quay.IO/jupyter/nb@sha256:abc", "quay.io/jupyter/nb", None),
    ("localhost:5000/nb:v1", "localhost:5000/nb", "v1"),
    ("registry:5000/team/nb", "registry:5000/team/nb", None),
])
def test_image_references_are_normalised(image, repository, tag):
    ref = images.parse_image(image)
    assert (ref.repository, ref.tag) == (repository, tag)


IMG = "registry.example.org/alice/nb"


def test_claimed_images_need_ownership_or_a_share():
    shares = [ishare(IMG, "alice", users=["carol"], groups=["lab"])]
    assert images.use_problem("alice", (), IMG + ":v1", shares, POLICY) is None
    assert images.use_problem("carol", (), IMG, shares, POLICY) is None
    assert images.use_problem("bob", ("lab",), IMG, shares, POLICY) is None
    problem = images.use_problem("dave", ("guests",), IMG, shares, POLICY)
    assert f"image '{IMG}' belongs to 'alice'" in problem
    # Short names resolve to the same repository as their long form.
    hub = [ishare("jupyter/nb", "alice", users=["carol"])]
    assert images.use_problem("dave", (), "docker.io/jupyter/nb:1", hub, POLICY) is not None


def test_tagged_shares_cover_their_tag_only():
    shares = [ishare(IMG + ":v1", "alice", users=["carol"])]
    assert images.use_problem("carol", (), IMG + ":v1", shares, POLICY) is None
    assert images.use_problem("carol", (), IMG + ":v2", shares, POLICY) is not None


def test_the_oldest_share_claims_and_others_are_refused():
    first = ishare(IMG, "alice", users=["carol"], name="a", created="2026-01-01T00:00:00Z")
    later = ishare(IMG + ":v2", "bob", users=["bob"], name="b", created="2026-01-02T00:00:00Z")
    assert images.claims([later, first])[IMG].owner == "alice"
    problem = admission.imageshare_problem(CREATE, later, None, BOB, POLICY, [first], None)
    assert "already claimed by 'alice'" in problem
    assert admission.imageshare_problem(CREATE, ishare(IMG, "alice", users=["x"], name="c"), None, ALICE,
                                        POLICY, [first], None) is None
    assert images.status(later, [first, later])[0] is False
    holds, _, shared = images.status(first, [first, later])
    assert holds and shared["summary"] == "carol"


def test_unclaimed_images_follow_the_configured_default():
    assert images.use_problem("bob", (), "docker.io/library/busybox", [], POLICY) is None
    policy = Policy(unclaimed_image_deny=("registry.example.org/",))
    assert "may only be used once their owner shares them" in images.use_problem("bob", (), IMG, [], policy)
    assert images.use_problem("bob", (), "busybox", [], policy) is None
    assert images.use_problem("bob", (), "busybox", [], Policy(unclaimed_image_deny=("*",))) is not None


def test_toolrun_image_rule_uses_request_groups_or_directory():
    shares = [ishare(IMG, "alice", groups=["lab"])]
    assert admission.toolrun_problem(CREATE, run(owner=None, image=IMG) | {"spec": {"owner": "bob", "image": IMG}},
                                     None, BOB, POLICY, shares, None) is None
    named = {"metadata": {"name": "x", "namespace": "ns"}, "spec": {"owner": "bob", "image": IMG}}
    assert admission.toolrun_problem(CREATE, named, None, MASTER, POLICY, shares, None) is not None
    assert admission.toolrun_problem(CREATE, named, None, MASTER, POLICY, shares, DIRECTORY) is None
    # An unchanged image on update is not re-checked: unsharing stops new launches only.
    assert admission.toolrun_problem(UPDATE, named, named, Requester("bob", ()), POLICY, [], None) is None


def test_read_execute_rule_for_run_shares():
    shares = [ishare(IMG, "alice", users=["carol"], groups=["lab"])]
    runs = {"nb": run(image=IMG)}
    assert admission.runshare_problem(share(users=["carol"], groups=["lab"]), ALICE, POLICY, runs, shares, None) is None
    known = directory.parse({"directory.yaml": "users: [alice, bob, dave]\ngroups: {lab: [alice, bob]}\n"})
    problem = admission.runshare_problem(share(users=["dave"]), ALICE, POLICY, runs, shares, known)
    assert "user 'dave' may not use the run's image" in problem
    problem = admission.runshare_problem(share(users=[], groups=["guests"]), ALICE, POLICY, runs, shares, None)
    assert "group 'guests' may not use the run's image" in problem
    # A user counts through a shared group when the directory says they are a member.
    assert admission.runshare_problem(share(users=["bob"]), ALICE, POLICY, runs, shares, DIRECTORY) is None
    # Without a directory a user's groups are unknown here: admitted, and the gate decides per request.
    assert admission.runshare_problem(share(users=["dave"]), ALICE, POLICY, runs, shares, None) is None
    assert not access.may_use_image(runs["nb"], "dave", ["guests"], shares, POLICY)
    assert access.may_use_image(runs["nb"], "bob", ["lab"], shares, POLICY)
    assert access.may_use_image(runs["nb"], "alice", [], shares, POLICY)  # the owner launched it


def test_only_the_sharer_an_owner_or_an_admin_changes_or_deletes_a_share():
    policy = Policy()
    runs = {"nb": {"metadata": {"name": "nb", "namespace": "lab"}, "spec": {"owner": "alice"}}}
    share = {"metadata": {"name": "s", "namespace": "lab", "annotations": {access.ANN_SHARED_BY: "admin"}},
             "spec": {"runRef": {"name": "nb"}, "users": ["bob"]}}

    def problem(who, groups=(), operation="DELETE", known=runs):
        return admission.share_change_problem(operation, share, Requester(who, tuple(groups)), policy, known)

    assert problem("admin") is None  # the sharer
    assert problem("alice") is None  # the owner of the run it shares
    assert problem("root", ["system:masters"]) is None
    assert "only its sharer, the owner of the runs it shares or an administrator" in problem("carol")
    assert "may change it" in problem("carol", operation="UPDATE")
    assert problem("alice", known={}) is not None  # the run is gone: nobody owns what it shares


def test_reserved_friendly_names_are_refused_by_admission_and_by_the_model():
    policy = Policy.from_env({"TOOLSHARE_RESERVED_NAMES": "portal,gate"})
    assert policy.reserved_names == ("auth", "gate", "portal")  # auth, the sign-in host, always
    run = {"metadata": {"name": "nb", "namespace": "lab"},
           "spec": {"owner": "alice", "image": "img", "friendlyName": "portal"}}
    problem = admission.toolrun_problem(CREATE, run, None, ALICE, policy, [], None)
    assert problem.startswith("spec.friendlyName: 'portal' is reserved")
    assert any("reserved" in p for p in model.validate_run(run, policy.reserved_names))
    assert model.validate_run(run) == []  # not reserved by default
    with pytest.raises(PolicyError, match="TOOLSHARE_RESERVED_NAMES"):
        Policy.from_env({"TOOLSHARE_RESERVED_NAMES": "Not A Label"})


def test_a_runs_principals_over_all_its_shares_are_bounded():
    run = {"metadata": {"name": "nb", "namespace": "lab"},
           "spec": {"owner": "alice", "image": "img", "endpoints": [{"name": "lab", "port": 8888, "protocol": "http"}]}}

    def share_of(name, users):
        return {"metadata": {"name": name, "namespace": "lab"}, "spec": {"runRef": {"name": "nb"}, "users": users}}

    limit = model.MAX_RUN_PRINCIPALS
    stored = [share_of(f"s{i}", [f"u{i}-{j}" for j in range(200)]) for i in range(limit // 200)]
    problem = admission.run_principals_problem(share_of("new", ["mallory"]), [run], lambda _: stored, NOW)
    assert problem == (f"ToolRun 'nb' would be shared with {limit + 1} users and groups by its shares together; "
                       f"at most {limit} (so that its access list fits in its Ingress)")
    assert admission.run_principals_problem(share_of("new", ["u0-0"]), [run], lambda _: stored, NOW) is None
    # Editing a stored share counts it once, as it will be.
    assert admission.run_principals_problem(share_of("s0", ["x"]), [run], lambda _: stored, NOW) is None


def test_paths_with_dot_segments_are_invalid():
    for path in ("/..", "/a/../b", "/./a", "/a/.", "/a/.."):
        run = {"metadata": {"name": "nb", "namespace": "lab"}, "spec": {"owner": "alice", "image": "img",
               "endpoints": [{"name": "lab", "port": 8888, "protocol": "http", "path": path}]}}
        assert any("without . or .. segments" in p for p in model.validate_run(run)), path
        assert model.http_endpoints(run) == []
    assert model.DOT_SEGMENT_RE.search("/a..b/.c/d.") is None


CLAIMS = Policy.from_env({"TOOLSHARE_IMAGE_CLAIMS":
                          "namespace:*=registry.example.org/{namespace}/; user:*=registry.example.org/{user}/;"
                          "group:ml=registry.example.org/ml/,ghcr.io/ml-team/"})


def _imageshare(image, owner="carol", namespace="carols"):
    return {"metadata": {"name": "img", "namespace": namespace}, "spec": {"owner": owner, "image": image, "users": ["bob"]}}


def test_image_claims_follow_the_administrators_rule():
    carol = Requester("carol", ("guests",))
    # carol's attack: claiming a public image everyone launches, from her own namespace.
    problem = admission.imageshare_problem(CREATE, _imageshare("quay.io/jupyter/base-notebook"), None, carol,
                                           CLAIMS, [], None)
    assert problem.startswith("spec.image: 'carol' may not claim 'quay.io/jupyter/base-notebook' from namespace "
                              "'carols': claims are limited by the administrator's rule TOOLSHARE_IMAGE_CLAIMS")
    assert "registry.example.org/carol/', 'registry.example.org/carols/'" in problem
    for image in ("registry.example.org/carols/nb:1", "registry.example.org/carol/tools/nb"):
        assert admission.imageshare_problem(CREATE, _imageshare(image), None, carol, CLAIMS, [], None) is None
    assert admission.imageshare_problem(CREATE, _imageshare("registry.example.org/team-a/nb"), None, carol,
                                        CLAIMS, [], None) is not None  # another namespace's path
    ml = Requester("erin", ("ml",))
    assert admission.imageshare_problem(CREATE, _imageshare("ghcr.io/ml-team/x", owner="erin"), None, ml,
                                        CLAIMS, [], None) is None
    # Administrators claim anything; with no rule at all, nobody else claims anything.
    assert admission.imageshare_problem(CREATE, _imageshare("quay.io/x/y"), None, ADMIN, CLAIMS, [], None) is None
    assert "(not set)" in admission.imageshare_problem(CREATE, _imageshare("registry.example.org/carols/nb"), None,
                                                       carol, Policy(), [], None)


def test_a_placeholder_is_one_path_segment():
    # A user named "carol/x" gets nothing from {user}: she must not reach into carol's space.
    assert CLAIMS.claimable("carol/x", (), "carols") == ["registry.example.org/carols/"]
    with pytest.raises(PolicyError, match="TOOLSHARE_IMAGE_CLAIMS"):
        Policy.from_env({"TOOLSHARE_IMAGE_CLAIMS": "team:x=registry.example.org/"})
    with pytest.raises(PolicyError, match="is not an image prefix"):
        Policy.from_env({"TOOLSHARE_IMAGE_CLAIMS": "user:*=Registry/{user}"})
