"""spec.template at the API server: what would break the sharing guarantees is refused before
anything is stored (tests/data/hostile_templates.yaml), an edit that would is refused with the
stored run unchanged, and a run uses only the Secrets, ConfigMaps and service accounts its writer
may use themselves (the webhook's SubjectAccessReview as the writer)."""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes
import pytest
import yaml

from tests.support import rbac
from tests.support.objects import Toolshare, toolrun
from tests.support.wait import wait_for
from toolshare.model import service_name

CORPUS = [pytest.param(e, id=e["id"])
          for e in yaml.safe_load((Path(__file__).parents[1] / "data" / "hostile_templates.yaml").read_text())]


def _merged(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture
def alice(cluster, operator, namespace) -> Toolshare:
    rbac.bind_edit(cluster, namespace, users=["alice"])
    return Toolshare(cluster.client("alice"), namespace)


@pytest.mark.parametrize("entry", CORPUS)
def test_a_hostile_template_is_refused_before_anything_is_stored(alice, entry):
    run = toolrun("hostile")
    run["spec"] = _merged(run["spec"], entry["spec"])
    with pytest.raises(kubernetes.client.ApiException) as refused:
        alice.create(run)
    assert (refused.value.status, entry["message"] in refused.value.body) == (entry["status"], True), \
        refused.value.body
    assert alice.get("toolruns", "hostile") is None


def test_an_edit_that_would_reach_the_node_is_refused_and_the_run_stays_as_it_was(alice):
    stored = alice.create(toolrun("nb"))
    for patch, status in (({"spec": {"template": {"hostNetwork": True}}}, 422),
                          ({"spec": {"template": {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}}, 403)):
        with pytest.raises(kubernetes.client.ApiException) as refused:
            alice.patch("toolruns", "nb", patch)
        assert refused.value.status == status, refused.value.body
        now = alice.get("toolruns", "nb")
        assert now["spec"] == stored["spec"] and now["metadata"]["generation"] == stored["metadata"]["generation"]


WRITER_ROLE = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "toolrun-writer"},
               "rules": [{"apiGroups": ["toolshare.dev"], "resources": ["toolruns"],
                          "verbs": ["create", "get", "list", "watch", "patch", "update", "delete"]}]}


def _bind(rbac_api, namespace: str, role: dict, user: str) -> None:
    rbac_api.create_namespaced_role(namespace, role)
    rbac_api.create_namespaced_role_binding(namespace, {
        "metadata": {"name": role["metadata"]["name"]},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]},
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]})


def test_a_run_uses_only_what_its_writer_may_use(cluster, operator, namespace):
    admin = cluster.client()
    core, authz = kubernetes.client.CoreV1Api(admin), kubernetes.client.RbacAuthorizationV1Api(admin)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "db"}, "stringData": {"password": "s3cret"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "settings"}, "data": {"mode": "lab"}})
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "runner"}})
    # carol may write runs in the namespace and nothing else: not read its Secrets, not act as its accounts.
    _bind(authz, namespace, WRITER_ROLE, "carol")
    carol_client = cluster.client("carol")
    wait_for(lambda: rbac.can(carol_client, namespace, "create", "toolruns"), timeout=30, interval=0.1,
             what="carol allowed to create toolruns")
    carol = Toolshare(carol_client, namespace)
    assert not rbac.can(carol_client, namespace, "get", "secrets", group="")

    with_secret = toolrun("nb", owner="carol")
    with_secret["spec"]["env"] = [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]
    with pytest.raises(kubernetes.client.ApiException) as refused:
        carol.create(with_secret)
    assert refused.value.status == 403
    assert (f"spec.env[0].valueFrom.secretKeyRef: user 'carol' may not get secrets 'db' in namespace "
            f"'{namespace}', so a run they write may not use that Secret either") in refused.value.body
    as_runner = toolrun("runner", owner="carol")
    as_runner["spec"]["template"] = {"serviceAccountName": "runner", "automountServiceAccountToken": True}
    with pytest.raises(kubernetes.client.ApiException) as refused:
        carol.create(as_runner)
    assert refused.value.status == 403
    assert "spec.template.serviceAccountName: user 'carol' may not create serviceaccounts/token 'runner'" \
        in refused.value.body
    assert carol.list("toolruns") == []

    # Once she may read that one Secret, her run may use it; the operator's own writes to the run
    # (its finalizer) name nothing new and pass, and the Pod takes the variable from the Secret.
    _bind(authz, namespace, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                             "metadata": {"name": "db-reader"},
                             "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["db"],
                                        "verbs": ["get"]}]}, "carol")
    review = {"spec": {"user": "carol", "resourceAttributes": {
        "namespace": namespace, "verb": "get", "resource": "secrets", "name": "db"}}}
    wait_for(lambda: kubernetes.client.AuthorizationV1Api(admin).create_subject_access_review(review).status.allowed,
             timeout=30, interval=0.1, what="carol allowed to get secret db")
    carol.create(with_secret)
    wait_for(lambda: (carol.condition("toolruns", "nb") or {}).get("reason") == "Reconciled", timeout=60,
             what="nb Reconciled")
    pod = core.read_namespaced_pod(service_name("nb"), namespace)
    tool = next(c for c in pod.spec.containers if c.name == "tool")
    assert [(e.name, e.value_from.secret_key_ref.name, e.value_from.secret_key_ref.key) for e in tool.env] == [
        ("DB_PASSWORD", "db", "password")]
    assert pod.spec.automount_service_account_token is False

    # An edit that adds a ConfigMap she may not read is refused; the run stays as it was.
    with pytest.raises(kubernetes.client.ApiException) as refused:
        carol.patch("toolruns", "nb", {"spec": {"template": {
            "volumes": [{"name": "conf", "configMap": {"name": "settings"}}],
            "volumeMounts": [{"name": "conf", "mountPath": "/etc/tool"}]}}})
    assert refused.value.status == 403
    assert "spec.template.volumes[0].configMap.name: user 'carol' may not get configmaps 'settings'" in refused.value.body
    assert "template" not in carol.get("toolruns", "nb")["spec"]

