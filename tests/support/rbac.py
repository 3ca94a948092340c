"""manifests/rbac on the test cluster: the operator's service account and its kubeconfig, and
RoleBindings that let the test users work in a namespace (RBAC and admission both exercised)."""

from __future__ import annotations

import time
from pathlib import Path

import kubernetes
import yaml

from tests.support.wait import wait_for
from toolshare.local.dev import kubectl, repo_root

OPERATOR_NAMESPACE, OPERATOR_SA = "toolshare-system", "toolshare-operator"
# The session operator's admission policy (tests/integration/test_admission.py relies on it): a GitOps
# service account trusted in two fixed namespaces, and the directory ConfigMap (absent = no directory).
GITOPS_NAMESPACE, GITOPS_SA = "toolshare-gitops", "applier"
GITOPS_TARGETS = ("gitops-team-a",)
DIRECTORY = (OPERATOR_NAMESPACE, "toolshare-directory")
POLICY_ENV = {
    "TOOLSHARE_TRUSTED_APPLIERS": f"serviceaccount:{GITOPS_NAMESPACE}/{GITOPS_SA}={','.join(GITOPS_TARGETS)}",
    "TOOLSHARE_DIRECTORY": "/".join(DIRECTORY),
    # Each namespace claims images under its own path, each user under theirs.
    "TOOLSHARE_IMAGE_CLAIMS": "namespace:*=registry.example.org/{namespace}/; user:*=registry.example.org/{user}/",
}


def install(bins, cluster) -> None:
    """kubectl apply -k manifests/rbac, as a cluster administrator would."""
    kubectl(bins, cluster.kubeconfig(), "apply", "--server-side", "--field-manager=toolshare-test",
            "-k", str(repo_root() / "manifests" / "rbac"))


GATEWAY_ROLE = "toolshare-operator-gateway"  # manifests/rbac/operator-clusterrole-gateway.yaml


def install_gateway(bins, cluster) -> None:
    """TOOLSHARE_ROUTING=gateway's extra rules for the operator, as an administrator applies them
    (docs: not part of `kubectl apply -k manifests/rbac`); returns once the authorizer uses them."""
    kubectl(bins, cluster.kubeconfig(), "apply", "--server-side", "--field-manager=toolshare-test",
            "-f", str(repo_root() / "manifests" / "rbac" / "operator-clusterrole-gateway.yaml"))
    _wait_operator_may(cluster, "create", "httproutes", "gateway.networking.k8s.io", True)


def remove_gateway(cluster) -> None:
    """Take the gateway rules away again (what an administrator does when switching back to
    ingress); returns once the authorizer no longer grants them."""
    authz = kubernetes.client.RbacAuthorizationV1Api(cluster.client())
    for delete in (authz.delete_cluster_role_binding, authz.delete_cluster_role):
        try:
            delete(GATEWAY_ROLE)
        except kubernetes.client.ApiException as e:
            if e.status != 404:
                raise
    _wait_operator_may(cluster, "create", "httproutes", "gateway.networking.k8s.io", False)


def _wait_operator_may(cluster, verb: str, resource: str, group: str, allowed: bool, timeout: float = 30) -> None:
    authz = kubernetes.client.AuthorizationV1Api(cluster.client())
    review = {"spec": {"user": f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SA}", "resourceAttributes": {
        "namespace": "default", "verb": verb, "group": group, "resource": resource}}}
    wait_for(lambda: bool(authz.create_subject_access_review(review).status.allowed) == allowed, timeout=timeout,
             interval=0.1, what=f"the operator's account {'allowed' if allowed else 'refused'} {verb} {resource}")


def service_account_kubeconfig(cluster, namespace: str, name: str, path: Path, hours: int = 24) -> Path:
    """A kubeconfig with a bound token for the service account (TokenRequest API), nothing more."""
    core = kubernetes.client.CoreV1Api(cluster.client())
    token = core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": hours * 3600}}).status.token
    admin = yaml.safe_load(cluster.kubeconfig().read_text())
    server = admin["clusters"][0]["cluster"]
    user = f"system:serviceaccount:{namespace}:{name}"
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "toolshare-local", "cluster": {
            "server": server["server"], "certificate-authority-data": server["certificate-authority-data"]}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "toolshare-local-sa", "context": {"cluster": "toolshare-local", "user": user}}],
        "current-context": "toolshare-local-sa",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def bind_edit(cluster, namespace: str, users=(), service_accounts=()) -> None:
    """The standard `edit` role (into which toolshare-edit aggregates) for users in a namespace."""
    subjects = [{"kind": "User", "name": u, "apiGroup": "rbac.authorization.k8s.io"} for u in users]
    subjects += [{"kind": "ServiceAccount", "namespace": ns, "name": n} for ns, n in service_accounts]
    kubernetes.client.RbacAuthorizationV1Api(cluster.client()).create_namespaced_role_binding(namespace, {
        "metadata": {"name": "toolshare-test-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": subjects,
    })
    # The authorizer learns of new bindings (and of rules aggregated into `edit`) through its
    # informers, a moment later: wait until it says yes, or the first create may get a 403.
    authz = kubernetes.client.AuthorizationV1Api(cluster.client())
    names = list(users) + [f"system:serviceaccount:{ns}:{n}" for ns, n in service_accounts]
    for user in names:
        review = {"spec": {"user": user, "resourceAttributes": {
            "namespace": namespace, "verb": "create", "group": "toolshare.dev", "resource": "toolruns"}}}
        deadline = time.monotonic() + 30
        while not authz.create_subject_access_review(review).status.allowed:
            if time.monotonic() > deadline:
                raise AssertionError(f"{user} still may not create toolruns in {namespace} after 30 s")
            time.sleep(0.1)



def can(client, namespace: str, verb: str, resource: str, group: str = "toolshare.dev") -> bool:
    """Whether the client's identity may do it, as the API server's authorizer says now."""
    review = kubernetes.client.AuthorizationV1Api(client).create_self_subject_access_review({"spec": {
        "resourceAttributes": {"namespace": namespace, "verb": verb, "resource": resource, "group": group}}})
    return bool(review.status.allowed)


GATE_NAMESPACE, GATE_SA = "toolshare-system", "toolshare-gate"


def install_gate(bins, cluster, path: Path) -> Path:
    """The gate's service account, ClusterRole and binding from manifests/gate (not its Deployment:
    the session gate runs as a process here), as an administrator applies them; returns a
    kubeconfig of that account, once the authorizer grants it what the ClusterRole says."""
    docs = [d for f in ("clusterrole.yaml", "gate.yaml")
            for d in yaml.safe_load_all((repo_root() / "manifests" / "gate" / f).read_text())
            if d and d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")]
    kubectl(bins, cluster.kubeconfig(), "apply", "--server-side", "--field-manager=toolshare-test",
            "-f", str(repo_root() / "manifests" / "rbac" / "namespace.yaml"))
    kubectl(bins, cluster.kubeconfig(), "apply", "--server-side", "--field-manager=toolshare-test", "-f", "-",
            input=yaml.safe_dump_all(docs))
    authz = kubernetes.client.AuthorizationV1Api(cluster.client())
    review = {"spec": {"user": f"system:serviceaccount:{GATE_NAMESPACE}:{GATE_SA}", "resourceAttributes": {
        "verb": "impersonate:user-info", "group": "authentication.k8s.io", "resource": "users", "name": "alice"}}}
    wait_for(lambda: bool(authz.create_subject_access_review(review).status.allowed), timeout=30, interval=0.1,
             what="the gate's account granted its ClusterRole")
    return service_account_kubeconfig(cluster, GATE_NAMESPACE, GATE_SA, path)
