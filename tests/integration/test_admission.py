"""Identity and admission on the real API server: alice, bob and carol with their own tokens, RBAC
from manifests/rbac (the aggregated `edit` role), and the operator's webhooks deciding.

The session operator runs under its own service account with the policy in tests/support/rbac.py
(a trusted GitOps service account for gitops-team-a, a directory ConfigMap that is absent except
in test_directory).
"""

from __future__ import annotations

import http.client
import json
import ssl
from pathlib import Path

import kubernetes
import pytest
import yaml

from tests.support import rbac
from tests.support.auth import get
from tests.support.burst import retrying
from tests.support.expected import converged
from tests.support.objects import GROUP, VERSION, Toolshare, imageshare, runshare, toolrun
from tests.support.wait import wait_for

CORPUS = [e["value"] * e.get("repeat", 1)
          for e in yaml.safe_load((Path(__file__).parents[1] / "data" / "hostile_principals.yaml").read_text())]


def unowned(run: dict, image: str | None = None) -> dict:
    run["spec"].pop("owner")
    if image:
        run["spec"]["image"] = image
    return run


def refusal(fn, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(kubernetes.client.ApiException) as err:
        fn(*args, **kwargs)
    body = err.value.body
    try:
        return err.value.status, json.loads(body)["message"]
    except (TypeError, ValueError, KeyError):
        return err.value.status, str(body)


def edit_role_aggregated(cluster) -> bool:
    role = kubernetes.client.RbacAuthorizationV1Api(cluster.client()).read_cluster_role("edit")
    return any(GROUP in (r.api_groups or []) and "imageshares" in (r.resources or []) for r in role.rules or [])


@pytest.fixture
def users(cluster, namespace, operator):
    """alice, bob and carol may edit Toolshare objects in the test namespace (through `edit`)."""
    wait_for(lambda: edit_role_aggregated(cluster), timeout=60, what="toolshare-edit aggregated into edit")
    rbac.bind_edit(cluster, namespace, users=("alice", "bob", "carol"))
    for user in ("alice", "bob", "carol"):  # RBAC's informers take a moment to see a new binding
        wait_for(lambda: rbac.can(cluster.client(user), namespace, "create", "toolruns"), what=f"{user} bound")
    return {u: Toolshare(cluster.client(u), namespace) for u in ("admin", "alice", "bob", "carol")}


def ready(ts, plural, name):
    cond = ts.condition(plural, name)
    return cond if cond and cond["status"] == "True" else None


def image_for(namespace: str, name: str = "notebook") -> str:
    # Claims are cluster-wide; a per-test repository keeps tests independent.
    return f"registry.example.org/{namespace}/{name}"


# --- owner identity ------------------------------------------------------------------------

def test_alice_launches_and_shares_and_is_recorded(users):
    alice = users["alice"]
    run = alice.create(unowned(toolrun("nb")))
    assert run["spec"]["owner"] == "alice"  # set from her token, at admission
    wait_for(lambda: ready(alice, "toolruns", "nb"), what="run Ready")
    share = alice.create(runshare("to-bob", run="nb", users=["bob"]))
    assert share["metadata"]["annotations"]["toolshare.dev/shared-by"] == "alice"
    assert share["metadata"]["annotations"]["toolshare.dev/shared-by-groups"] == ""
    wait_for(lambda: alice.annotations("nb").get("lab", {}).get("toolshare.dev/allowed-users") == "bob",
             what="bob on the Ingress")
    converged(users["admin"].api.api_client, alice.ns)  # the Ingress says nothing of the share's status
    assert ready(alice, "runshares", "to-bob")["reason"] == "Active"


def test_forged_sharer_annotation_is_overwritten(users):
    alice, bob = users["alice"], users["bob"]
    alice.create(unowned(toolrun("nb")))
    wait_for(lambda: ready(alice, "toolruns", "nb"), what="run Ready")
    forged = runshare("mine", run="nb", users=["carol"])
    forged["metadata"]["annotations"] = {"toolshare.dev/shared-by": "bob", "toolshare.dev/shared-by-groups": "system:masters"}
    created = alice.create(forged)
    assert created["metadata"]["annotations"]["toolshare.dev/shared-by"] == "alice"
    assert created["metadata"]["annotations"]["toolshare.dev/shared-by-groups"] == ""
    # bob cannot forge alice's name either: his own share is refused before any annotation counts.
    forged["metadata"]["name"] = "bobs"
    forged["metadata"]["annotations"] = {"toolshare.dev/shared-by": "alice"}
    status, message = refusal(bob.create, forged)
    assert status == 403 and "owned by 'alice'" in message


def webhook_calls(cluster, name: str) -> int:
    """How often the API server has called one webhook (its admission duration histogram's count)."""
    client = cluster.client()
    method, url, headers, _, _ = client.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
    text = client.call_api(method, url, header_params=headers).read().decode()
    prefix = "apiserver_admission_webhook_admission_duration_seconds_count{"
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith(prefix) and f'name="{name}"' in line)


def test_sharer_webhook_is_skipped_only_when_it_would_change_nothing(users, cluster):
    """matchConditions (webhookconfig.py) skip the sharer webhook when the annotations already name
    the requester and their conferring groups; any other request still gets them rewritten."""
    alice, admin = users["alice"], users["admin"]
    alice.create(unowned(toolrun("nb")))
    alice.create(runshare("to-bob", run="nb", users=["bob"]))
    sharer = "runshare-sharer.toolshare.dev"
    before = webhook_calls(cluster, sharer)
    alice.patch("runshares", "to-bob", {"spec": {"users": ["bob", "carol"]}})
    assert webhook_calls(cluster, sharer) == before  # alice edits alice's share: nothing to stamp
    # A forged group on an update by the recorded sharer is not skipped: it is overwritten.
    forged = alice.patch("runshares", "to-bob", {"metadata": {"annotations": {
        "toolshare.dev/shared-by-groups": "system:masters"}}})
    assert forged["metadata"]["annotations"]["toolshare.dev/shared-by-groups"] == ""
    assert webhook_calls(cluster, sharer) == before + 1
    # Another requester (an administrator) is recorded, with the group that confers the right.
    edited = admin.patch("runshares", "to-bob", {"spec": {"users": ["bob"]}})
    assert edited["metadata"]["annotations"]["toolshare.dev/shared-by"] == "admin"
    assert edited["metadata"]["annotations"]["toolshare.dev/shared-by-groups"] == "system:masters"
    # ...and alice's next edit records alice again.
    back = alice.patch("runshares", "to-bob", {"spec": {"users": ["bob", "carol"]}})
    assert back["metadata"]["annotations"]["toolshare.dev/shared-by"] == "alice"
    assert back["metadata"]["annotations"]["toolshare.dev/shared-by-groups"] == ""


def test_owner_webhook_is_skipped_when_the_owner_is_given(users, cluster):
    alice = users["alice"]
    before = webhook_calls(cluster, "toolrun-owner.toolshare.dev")
    run = alice.create(toolrun("nb", owner="alice"))
    assert run["spec"]["owner"] == "alice"
    assert webhook_calls(cluster, "toolrun-owner.toolshare.dev") == before
    alice.create(unowned(toolrun("nb2")))
    assert webhook_calls(cluster, "toolrun-owner.toolshare.dev") == before + 1


def test_bob_cannot_claim_to_be_alice_but_an_admin_may_name_owners(users):
    status, message = refusal(users["bob"].create, toolrun("nb", owner="alice"))
    assert status == 403
    assert "user 'bob' may not create a ToolRun owned by 'alice'" in message
    assert "spec.owner" in message and "toolshare:admins" in message
    assert users["admin"].create(toolrun("by-admin", owner="carol"))["spec"]["owner"] == "carol"
    assert users["carol"].create(toolrun("hers", owner="carol"))["spec"]["owner"] == "carol"


def test_owner_is_immutable_even_for_admins(users):
    users["alice"].create(unowned(toolrun("nb")))
    for who in ("alice", "admin"):
        status, message = refusal(users[who].patch, "toolruns", "nb", {"spec": {"owner": "bob"}})
        assert status == 422 and "spec.owner is immutable" in message  # the CRD's CEL rule, first
    assert users["alice"].get("toolruns", "nb")["spec"]["owner"] == "alice"


def test_server_side_apply_without_owner_keeps_the_recorded_owner(users, cluster, namespace):
    """A GitOps applier that never mentions spec.owner sees no drift and cannot drop it."""
    api = kubernetes.client.CustomObjectsApi(cluster.client("alice"))
    manifest = unowned(toolrun("gitops"))
    manifest["metadata"]["namespace"] = namespace

    def apply(body):
        resp = api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "toolruns", "gitops", body, field_manager="argocd-controller",
            force=True, _content_type="application/apply-patch+yaml", _preload_content=False)
        return json.loads(resp.data)

    first = apply(manifest)
    assert first["spec"]["owner"] == "alice"
    again = apply(manifest)
    assert again["spec"]["owner"] == "alice"
    assert again["metadata"]["generation"] == first["metadata"]["generation"]  # no drift, no change
    manifest["spec"]["args"] = ["--debug"]
    assert apply(manifest)["spec"]["owner"] == "alice"


# --- who may share -------------------------------------------------------------------------

def test_bob_cannot_share_alices_run(users):
    alice, bob = users["alice"], users["bob"]
    alice.create(unowned(toolrun("nb", labels={"formation": "genomics"})))
    bob.create(unowned(toolrun("bobs", labels={"formation": "bobs"})))
    wait_for(lambda: ready(alice, "toolruns", "nb") and ready(bob, "toolruns", "bobs"), what="runs Ready")
    status, message = refusal(bob.create, runshare("steal", run="nb", users=["bob"]))
    assert status == 403
    assert "user 'bob' may not share ToolRun 'nb': it is owned by 'alice'" in message
    status, message = refusal(bob.create, runshare("steal", selector={"matchExpressions": [
        {"key": "formation", "operator": "Exists"}]}, users=["carol"]))
    assert status == 403 and "owned by 'alice'" in message  # a selector reaching her run
    # His own formation he may share; so may an administrator share hers.
    bob.create(runshare("mine", selector={"matchLabels": {"formation": "bobs"}}, users=["carol"]))
    admin_share = users["admin"].create(runshare("by-admin", run="nb", users=["carol"]))
    assert admin_share["metadata"]["annotations"]["toolshare.dev/shared-by-groups"] == "system:masters"
    wait_for(lambda: ready(alice, "runshares", "by-admin"), what="admin's share Active")
    assert alice.get("runshares", "steal") is None


def test_operator_does_not_honour_a_share_whose_sharer_is_not_allowed(users):
    """Defence in depth: bob shares a run that does not exist yet (nothing to refuse at admission);
    when alice creates it, the operator marks bob's share Invalid and never applies it."""
    alice, bob = users["alice"], users["bob"]
    bob.create(runshare("early", run="future", users=["bob"]))
    wait_for(lambda: (c := bob.condition("runshares", "early")) and c["reason"] == "RunNotFound", what="RunNotFound")
    alice.create(unowned(toolrun("future")))
    cond = wait_for(lambda: (c := alice.condition("runshares", "early")) and c["reason"] == "Invalid" and c,
                    what="share Invalid")
    assert "shared by 'bob', who is not allowed" in cond["message"] and "owned by 'alice'" in cond["message"]
    wait_for(lambda: ready(alice, "toolruns", "future"), what="run Ready")
    assert alice.annotations("future")["lab"]["toolshare.dev/allowed-users"] == ""
    # A later change by bob is refused at admission, naming the owner.
    status, message = refusal(bob.patch, "runshares", "early", {"spec": {"users": ["bob", "carol"]}})
    assert status == 403 and "owned by 'alice'" in message


@pytest.fixture
def gitops(cluster, operator, users):
    """The trusted applier's service account and two namespaces it may write in (RBAC), of which
    the operator trusts it in gitops-team-a only."""
    core = kubernetes.client.CoreV1Api(cluster.client())
    names = [rbac.GITOPS_NAMESPACE, "gitops-team-a", "gitops-team-b"]
    for ns in names:
        core.create_namespace({"metadata": {"name": ns, "labels": {"toolshare.dev/test": "true"}}})
    try:
        core.create_namespaced_service_account(rbac.GITOPS_NAMESPACE, {"metadata": {"name": rbac.GITOPS_SA}})
        for ns in names[1:]:
            rbac.bind_edit(cluster, ns, users=("alice",), service_accounts=[(rbac.GITOPS_NAMESPACE, rbac.GITOPS_SA)])
        path = rbac.service_account_kubeconfig(cluster, rbac.GITOPS_NAMESPACE, rbac.GITOPS_SA,
                                               Path(cluster.kubeconfig().parent) / "gitops.kubeconfig", hours=1)
        client = kubernetes.config.new_client_from_config(config_file=str(path))
        for ns in names[1:]:
            wait_for(lambda: rbac.can(client, ns, "create", "runshares") and
                     rbac.can(cluster.client("alice"), ns, "create", "toolruns"), what=f"bindings in {ns}")
        yield {ns: (Toolshare(cluster.client("alice"), ns), Toolshare(client, ns)) for ns in names[1:]}
        client.close()
    finally:
        for ns in names:
            core.delete_namespace(ns)


def test_trusted_applier_shares_within_its_namespaces_and_nowhere_else(gitops):
    sa = f"system:serviceaccount:{rbac.GITOPS_NAMESPACE}:{rbac.GITOPS_SA}"
    for ns, (alice, applier) in gitops.items():
        alice.create(unowned(toolrun("nb")))
        wait_for(lambda: ready(alice, "toolruns", "nb"), what=f"run Ready in {ns}")
    alice, applier = gitops["gitops-team-a"]
    share = applier.create(runshare("from-git", run="nb", groups=["lab"]))
    assert share["metadata"]["annotations"]["toolshare.dev/shared-by"] == sa
    wait_for(lambda: alice.annotations("nb").get("lab", {}).get("toolshare.dev/allowed-groups") == "lab",
             what="the applier's share applied")
    alice, applier = gitops["gitops-team-b"]
    status, message = refusal(applier.create, runshare("from-git", run="nb", groups=["lab"]))
    assert status == 403 and f"user '{sa}' may not share ToolRun 'nb': it is owned by 'alice'" in message
    # The applier is no owner: it cannot launch runs in someone else's name.
    status, message = refusal(gitops["gitops-team-a"][1].create, toolrun("forged", owner="alice"))
    assert status == 403 and "may not create a ToolRun owned by 'alice'" in message


# --- directory -----------------------------------------------------------------------------

DIRECTORY = {"users": ["alice", "bob", "carol"], "groups": {"lab": ["alice", "bob"], "data-science": ["alice"],
                                                           "guests": ["carol"]}}


@pytest.fixture
def directory(cluster, users):
    core = kubernetes.client.CoreV1Api(cluster.client())
    ns, name = rbac.DIRECTORY
    core.create_namespaced_config_map(ns, {"metadata": {"name": name},
                                           "data": {"directory.yaml": yaml.safe_dump(DIRECTORY)}})
    probe = runshare("probe", run="nb", users=["bobb"])
    try:
        wait_for(lambda: _dry_run_refused(users["admin"], probe), timeout=15, what="the directory in effect")
        yield
    finally:
        core.delete_namespaced_config_map(name, ns)
        wait_for(lambda: not _dry_run_refused(users["admin"], probe), timeout=15, what="the directory gone")


def _dry_run_refused(ts, obj) -> bool:
    try:
        ts.api.create_namespaced_custom_object(GROUP, VERSION, ts.ns, "runshares", obj, dry_run="All")
        return False
    except kubernetes.client.ApiException as e:
        return e.status == 403


def test_directory_refuses_unknown_principals(users, directory, namespace):
    alice = users["alice"]
    alice.create(unowned(toolrun("nb")))
    status, message = refusal(alice.create, runshare("typo", run="nb", users=["bobb"]))
    assert status == 403 and "user 'bobb' is not registered" in message
    status, message = refusal(alice.create, runshare("typo", run="nb", groups=["labb"]))
    assert "group 'labb' is not registered" in message
    status, message = refusal(users["admin"].create, toolrun("ghost", owner="mallory"))
    assert "spec.owner: user 'mallory' is not registered" in message
    status, message = refusal(alice.create, imageshare("img", image_for(namespace), users=["dave"]))
    assert "user 'dave' is not registered" in message
    alice.create(runshare("fine", run="nb", users=["bob"], groups=["lab"]))


def test_owner_named_by_admin_gets_groups_from_the_directory(users, directory, namespace):
    image = image_for(namespace)
    users["alice"].create(imageshare("nb-image", image, groups=["lab"]))
    wait_for(lambda: ready(users["alice"], "imageshares", "nb-image"), what="image claimed")
    run = unowned(toolrun("for-bob"), image)
    run["spec"]["owner"] = "bob"  # bob is in lab per the directory (the request is the admin's)
    users["admin"].create(run)
    run = unowned(toolrun("for-carol"), image)
    run["spec"]["owner"] = "carol"
    status, message = refusal(users["admin"].create, run)
    assert status == 403 and "not shared with user 'carol'" in message


# --- images --------------------------------------------------------------------------------

def test_images_are_owned_and_shared_like_runs(users, namespace):
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    image = image_for(namespace)
    share = alice.create(imageshare("nb-image", image + ":2026-11", users=["carol"]))
    assert share["spec"]["owner"] == "alice"
    got = wait_for(lambda: ready(alice, "imageshares", "nb-image") and alice.get("imageshares", "nb-image"),
                   what="ImageShare claimed")
    assert got["status"]["sharedWith"]["summary"] == "carol"
    assert ready(alice, "imageshares", "nb-image")["reason"] == "Claimed"

    # bob cannot take the image over, whatever the tag.
    status, message = refusal(bob.create, imageshare("mine", image, users=["bob"]))
    assert status == 403 and "is already claimed by 'alice'" in message
    # bob cannot launch it; carol (shared by name) can, for the shared tag only.
    status, message = refusal(bob.create, unowned(toolrun("bobs"), image + ":2026-11"))
    assert status == 403 and f"image '{image}' belongs to 'alice'" in message and "spec.image" in message
    carol.create(unowned(toolrun("carols"), image + ":2026-11"))
    status, message = refusal(carol.create, unowned(toolrun("carols-latest"), image + ":latest"))
    assert status == 403

    # Shared with bob's group (lab): bob can launch it. Admission decides from the operator's cache,
    # which holds a generation by the time the operator has written that generation's status.
    seen(alice, alice.patch("imageshares", "nb-image", {"spec": {"groups": ["lab"]}}))
    assert alice.get("imageshares", "nb-image")["status"]["sharedWith"]["summary"] == "carol, group:lab"
    bob_run = bob.create(unowned(toolrun("bobs"), image + ":2026-11"))
    assert bob_run["spec"]["owner"] == "bob"

    # Unsharing stops new launches only: bob's running ToolRun stays.
    seen(alice, alice.patch("imageshares", "nb-image", {"spec": {"groups": None}}))
    status, message = refusal(bob.create, unowned(toolrun("bobs-2"), image + ":2026-11"))
    assert status == 403 and f"image '{image}' belongs to 'alice'" in message
    assert bob.get("toolruns", "bobs") is not None


def seen(ts, imageshare: dict) -> None:
    """Until the operator has written the status of this generation of the ImageShare."""
    name, generation = imageshare["metadata"]["name"], imageshare["metadata"]["generation"]
    wait_for(lambda: (ts.get("imageshares", name).get("status") or {}).get("observedGeneration") == generation,
             what=f"the operator to see generation {generation} of {name}")


def test_runs_are_shared_only_with_people_who_may_use_their_image(users, namespace, gate, issuer):
    """READ+EXECUTE: sharing a run gives its users nothing if they may not run its image. A group is
    refused at admission; a user's groups are not known there without a directory, so the gate
    applies the rule on every request with the groups the sign-in gives."""
    alice = users["alice"]
    image = image_for(namespace)
    alice.create(imageshare("nb-image", image, users=["carol"], groups=["data-science"]))
    wait_for(lambda: ready(alice, "imageshares", "nb-image"), what="image claimed")
    alice.create(unowned(toolrun("nb"), image))
    wait_for(lambda: ready(alice, "toolruns", "nb"), what="run Ready")
    alice.create(runshare("ok", run="nb", users=["carol"], groups=["data-science"]))
    status, message = refusal(alice.create, runshare("guests", run="nb", groups=["guests"]))
    assert status == 403 and "group 'guests' may not use the run's image" in message
    alice.create(runshare("bob", run="nb", users=["bob"]))
    check = f"{gate.url}/check/{namespace}/nb/lab"
    # Once the gate holds share "bob" (bob in a group the image is shared with gets in through it),
    # the same bob signed in with only his own group is refused: shared with, but not on the image.
    wait_for(lambda: get(check, issuer.token("bob", groups=["data-science"]))[0] == 202,
             what="the gate to hold share bob")
    assert get(check, issuer.token("bob", groups=["lab"]))[0] == 403
    assert get(check, issuer.token("carol"))[0] == get(check, issuer.token("alice"))[0] == 202


# --- the injection corpus ------------------------------------------------------------------

def test_corpus_has_the_promised_shapes():
    assert len(CORPUS) >= 40
    assert any(len(p) == 10_000 for p in CORPUS)
    for needle in ("\r\n", "\x00", "\u2028", "\u2029", "\uff04", ",", "?"):
        assert any(needle in p for p in CORPUS), needle
    assert any(p != p.strip() for p in CORPUS)


def test_every_hostile_principal_is_refused_everywhere(users, cluster, namespace):
    alice, admin = users["alice"], users["admin"]
    alice.create(unowned(toolrun("nb")))
    alice.create(runshare("legit", run="nb", users=["bob"]))
    image = image_for(namespace)
    messages = []
    for i, bad in enumerate(CORPUS):
        attempts = [
            (alice, runshare(f"u{i}", run="nb", users=[bad])),
            (alice, runshare(f"g{i}", run="nb", groups=[bad])),
            (admin, toolrun(f"o{i}", owner=bad)),  # even an administrator cannot name it
            (alice, imageshare(f"iu{i}", image, users=[bad])),
            (alice, imageshare(f"ig{i}", image, groups=[bad])),
            (admin, imageshare(f"io{i}", image, users=["bob"], owner=bad)),
        ]
        for who, obj in attempts:
            status, message = refusal(who.create, obj)
            assert status in (403, 422), (bad[:80], message)
            assert any(s in message for s in ("principal", "Too long", "Required value", "must not be empty",
                                              "should be at least 1 chars long")), message
            messages.append(message)
    assert len(messages) == 6 * len(CORPUS)
    # None of it reached anything the operator writes (nor anything else in the namespace).
    wait_for(lambda: ready(alice, "runshares", "legit"), what="the legitimate share applied")
    written = _everything_in(cluster, namespace)
    leaked = [bad for bad in CORPUS if bad and bad in written]
    assert not leaked, leaked


def _everything_in(cluster, namespace) -> str:
    client = cluster.client()
    core = kubernetes.client.CoreV1Api(client)
    net = kubernetes.client.NetworkingV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    objects = [core.list_namespaced_pod(namespace), core.list_namespaced_service(namespace),
               core.list_namespaced_event(namespace), net.list_namespaced_ingress(namespace),
               net.list_namespaced_network_policy(namespace)]
    dumped = [json.dumps(client.sanitize_for_serialization(o)) for o in objects]
    for plural in ("toolruns", "runshares", "imageshares"):
        dumped.append(json.dumps(custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)))
    # json.dumps escapes control and non-ASCII characters; compare against the decoded text too.
    return "\n".join(dumped + [json.dumps(json.loads(d), ensure_ascii=False) for d in dumped])


def test_hostile_user_names_cannot_own_or_share(users, cluster, namespace):
    """The requester's own name is a principal too: an authenticated user whose name breaks the
    grammar (here by impersonation) cannot create anything that would record it."""
    rbac_api = kubernetes.client.RbacAuthorizationV1Api(cluster.client())
    rbac_api.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "impersonated-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "Group", "name": "toolshare-test-impersonated", "apiGroup": "rbac.authorization.k8s.io"}]})
    users["alice"].create(unowned(toolrun("nb")))
    sendable = [b for b in CORPUS if b and b == b.strip() and all(0x20 <= ord(c) < 0x7f for c in b) and len(b) < 4000]
    assert len(sendable) >= 25
    config = kubernetes.client.Configuration.get_default_copy()
    kubernetes.config.load_kube_config(config_file=str(cluster.kubeconfig()), client_configuration=config)

    def impersonating(user):
        client = kubernetes.client.ApiClient(config)
        client.set_default_header("Impersonate-User", user)
        client.set_default_header("Impersonate-Group", "toolshare-test-impersonated")
        return client

    probe = impersonating("mallory")
    wait_for(lambda: rbac.can(probe, namespace, "create", "toolruns"), what="the impersonated group bound")
    probe.close()
    for bad in sendable:
        client = impersonating(bad)
        ts = Toolshare(client, namespace)
        for obj in (unowned(toolrun("x")), runshare("x", run="nb", users=["bob"]), imageshare("x", image_for(namespace), users=["bob"])):
            status, message = refusal(ts.create, obj)
            assert status == 403 and "your user name cannot own or share" in message, (bad, message)
        client.close()


# --- RBAC and the webhook being down -------------------------------------------------------

def test_operator_runs_with_least_privilege(cluster, operator):
    """The operator's token is its service account's, and that account cannot read Secrets or
    write RBAC (which the admin kubeconfig could)."""
    config = yaml.safe_load(Path(operator.kubeconfig).read_text())
    assert config["users"][0]["name"] == f"system:serviceaccount:{rbac.OPERATOR_NAMESPACE}:{rbac.OPERATOR_SA}"
    client = kubernetes.config.new_client_from_config(config_file=str(operator.kubeconfig))
    try:
        def can(verb, resource, group=""):
            return rbac.can(client, "default", verb, resource, group)
        assert can("patch", "ingresses", "networking.k8s.io") and can("watch", "toolruns", GROUP)
        assert not can("get", "secrets") and not can("create", "clusterrolebindings", "rbac.authorization.k8s.io")
        assert not can("update", "toolruns", GROUP) and not can("delete", "runshares", GROUP)
    finally:
        client.close()


def post_review(port: int, serving_ca: Path, review: dict, client: tuple[Path, Path] | None = None):
    """POST `review` straight to the operator's webhook port, as a co-tenant could, presenting the
    client certificate (key, cert) if given: (status, answer), or the name of the error that ended it."""
    context = ssl.create_default_context(cafile=str(serving_ca))
    if client is not None:
        context.load_cert_chain(str(client[1]), str(client[0]))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    try:
        conn.request("POST", "/toolrun-admission", body=json.dumps(review), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    except (ssl.SSLError, OSError) as e:  # a handshake refused (TLS 1.3: on the first read)
        return type(e).__name__, b""
    finally:
        conn.close()


def test_the_webhook_port_answers_only_the_api_server(cluster, namespace, operator):
    """docs/security.md, the webhook port: a review posted straight to the operator would make it an
    oracle (a SubjectAccessReview as whoever the review names, the caches of other namespaces).
    Without a certificate, or with one from another CA (the cluster's own), the handshake fails; a
    certificate from the webhook client CA naming alice gets 403; the API server's is answered."""
    from tests.support.install import webhook_port
    from toolshare import pki
    from toolshare.local.controlplane import cluster as controlplane

    env = cluster.webhook_env()
    if not env:
        pytest.skip("TOOLSHARE_KUBECONFIG: this cluster's webhook client certificate is not known to the tests")
    pki_dir, port = Path(env["TOOLSHARE_WEBHOOK_CLIENT_CA"]).parent, webhook_port(operator)
    serving_ca = Path(operator.env["TOOLSHARE_WEBHOOK_CERT_DIR"]) / "ca.crt"
    run = toolrun("probe")
    run["spec"]["template"] = {"volumes": [{"name": "s", "secret": {"secretName": "db-password"}}]}
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "probe", "operation": "CREATE", "namespace": namespace,
                          "resource": {"group": GROUP, "version": VERSION, "resource": "toolruns"},
                          "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
                          "object": run, "oldObject": None}}
    alice = pki.ensure_client_cert(pki_dir, "probe-alice", "alice", ca=controlplane.WEBHOOK_CLIENT_CA)
    kubelet_client = (pki_dir / "apiserver-kubelet-client.key", pki_dir / "apiserver-kubelet-client.crt")
    apiserver = (pki_dir / "apiserver-webhook-client.key", pki_dir / "apiserver-webhook-client.crt")

    assert isinstance(post_review(port, serving_ca, review)[0], str)
    if kubelet_client[1].exists():  # from the cluster CA, which the webhook port does not trust
        assert isinstance(post_review(port, serving_ca, review, kubelet_client)[0], str)
    assert post_review(port, serving_ca, review, alice)[0] == 403
    status, answer = post_review(port, serving_ca, review, apiserver)
    assert status == 200 and json.loads(answer)["response"]["uid"] == "probe"


def test_users_need_rbac_too(cluster, namespace, operator):
    """Admission is not the only gate: without a RoleBinding, carol may not create anything."""
    status, _ = refusal(Toolshare(cluster.client("carol"), namespace).create, unowned(toolrun("nb")))
    assert status == 403


def test_webhook_down_refuses_creates(users, cluster, namespace, operator):
    """While the operator (and so its webhooks) is down, every create is refused with a clear error
    and nothing half-applied is left behind; once it is back, the very same creates succeed."""
    from tests.support.install import webhook_port
    from tests.support.operator_process import wait_for_webhooks

    objects = [("toolruns", toolrun("nb")), ("runshares", runshare("s", run="nb", users=["bob"])),
               ("imageshares", imageshare("i", image_for(namespace, "down"), users=["bob"]))]
    operator.stop()
    try:
        for plural, obj in objects:
            status, message = refusal(users["admin"].create, obj)
            assert status >= 500 and "failed calling webhook" in message, message
            assert f'"{obj["kind"].lower()}-' in message, message  # names the webhook, so the kind
            assert users["admin"].get(plural, obj["metadata"]["name"]) is None, f"{plural} stored anyway"
        assert not users["admin"].ingresses("nb")
    finally:
        operator.start()
    wait_for_webhooks(cluster, webhook_port(operator), operator)
    for _, obj in objects:  # retried only while the webhook does not answer yet (5xx), never a refusal
        retrying(users["admin"].create, obj, timeout=30)
    assert users["admin"].get("runshares", "s")["metadata"]["annotations"]["toolshare.dev/shared-by"] == "admin"
    converged(cluster.client(), namespace, timeout=30)
