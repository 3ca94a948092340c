"""Owners own their runs and shares, even against co-tenants who hold `edit` in the namespace.

alice and carol both have the `edit` role in the namespace (RBAC lets each write the other's
objects); bob has no role there. What stops carol is admission: the ValidatingAdmissionPolicy for
ToolRuns and ImageShares (CEL in the API server, no operator needed) and the RunShare webhook.
"""

from __future__ import annotations

import kubernetes
import pytest

from tests.support import rbac
from tests.support.objects import Toolshare, imageshare, runshare, toolrun
from tests.support.wait import wait_for


@pytest.fixture
def people(cluster, operator, namespace):
    rbac.bind_edit(cluster, namespace, users=["alice", "carol"])
    return {who: Toolshare(cluster.client(who), namespace) for who in ("alice", "bob", "carol", "admin")}


def refused(call, *args) -> str:
    with pytest.raises(kubernetes.client.ApiException) as e:
        call(*args)
    assert e.value.status == 403, e.value.body
    return e.value.body


def test_a_co_tenant_cannot_change_or_delete_someone_elses_run(people):
    alice, carol, admin = people["alice"], people["carol"], people["admin"]
    alice.create(toolrun("nb", labels={"team": "a"}))
    body = refused(carol.patch, "toolruns", "nb", {"spec": {"command": ["sh", "-c", "steal"]}})
    assert "ToolRun nb belongs to alice: only its owner or an administrator may change its spec or labels" in body
    refused(carol.patch, "toolruns", "nb", {"spec": {"env": [{"name": "X", "value": "y"}]}})
    refused(carol.patch, "toolruns", "nb", {"metadata": {"labels": {"team": "c"}}})  # would redirect selector shares
    assert "may delete it" in refused(carol.delete, "toolruns", "nb")
    # What is not the run's behaviour stays open to the namespace's editors.
    carol.patch("toolruns", "nb", {"metadata": {"annotations": {"note": "carol was here"}}})
    assert alice.get("toolruns", "nb")["spec"].get("command") is None
    alice.patch("toolruns", "nb", {"spec": {"command": ["jupyter", "lab"]}})
    admin.patch("toolruns", "nb", {"metadata": {"labels": {"team": "b"}}})
    alice.delete("toolruns", "nb")
    assert alice.get("toolruns", "nb") is None or alice.get("toolruns", "nb")["metadata"].get("deletionTimestamp")


def test_a_co_tenant_cannot_change_or_delete_someone_elses_imageshare(people):
    alice, carol = people["alice"], people["carol"]
    alice.create(imageshare("img", "registry.example.org/alice/own-nb", users=["bob"]))
    refused(carol.patch, "imageshares", "img", {"spec": {"users": ["carol"]}})
    refused(carol.delete, "imageshares", "img")
    alice.delete("imageshares", "img")


def test_only_the_sharer_the_owner_or_an_admin_may_change_or_delete_a_share(people):
    alice, bob, carol, admin = people["alice"], people["bob"], people["carol"], people["admin"]
    alice.create(toolrun("nb"))
    carol.create(toolrun("hers", owner="carol"))
    alice.create(runshare("to-bob", run="nb", users=["bob"]))
    body = refused(carol.delete, "runshares", "to-bob")
    assert "RunShare 'to-bob' was shared by 'alice': only its sharer" in body
    refused(carol.patch, "runshares", "to-bob", {"spec": {"runRef": {"name": "hers"}}})  # pointing it elsewhere
    refused(bob.delete, "runshares", "to-bob")  # no role in the namespace: RBAC refuses first
    # A share an administrator made on alice's run: alice, its owner, may take it back.
    admin.create(runshare("by-admin", run="nb", users=["dave"]))
    refused(carol.delete, "runshares", "by-admin")
    # The webhook lets the owner in from the operator's cache: wait until the operator has seen nb.
    wait_for(lambda: (alice.condition("toolruns", "nb") or {}).get("status") == "True", what="nb Ready")
    alice.delete("runshares", "by-admin")
    alice.delete("runshares", "to-bob")
    assert alice.get("runshares", "to-bob") is None and alice.get("runshares", "by-admin") is None


def test_a_public_image_cannot_be_squatted(people, namespace):
    """carol claims the public notebook image everyone launches: refused by the administrator's
    claim rule (tests/support/rbac.py: each namespace and user under their own registry path),
    and alice goes on launching it and sharing her run."""
    alice, carol = people["alice"], people["carol"]
    body = refused(carol.create, imageshare("squat", "quay.io/jupyter/base-notebook", users=["carol"]))
    assert ("'carol' may not claim 'quay.io/jupyter/base-notebook' from namespace "
            f"'{namespace}': claims are limited by the administrator's rule TOOLSHARE_IMAGE_CLAIMS") in body
    assert carol.get("imageshares", "squat") is None
    alice.create(toolrun("nb"))  # toolrun() launches quay.io/jupyter/base-notebook
    alice.create(runshare("to-bob", run="nb", users=["bob"]))
    # Within her own path carol claims as before.
    carol.create(imageshare("hers", f"registry.example.org/{namespace}/carols-tool", users=["bob"]))
