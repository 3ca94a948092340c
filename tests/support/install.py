"""Toolshare installed on a test cluster as in production: the CRDs from crds/, manifests/rbac, and
the operator under its service account serving its admission webhooks over TLS on 127.0.0.1.

The session fixtures in tests/conftest.py and the reliability suite's own control plane both use it,
so every operator under test is set up the same way.
"""

from __future__ import annotations

from pathlib import Path

from tests.support import rbac
from tests.support.objects import GROUP, VERSION
from tests.support.wait import wait_for
from tests.support.operator_process import OperatorProcess, wait_for_webhooks
from toolshare.local.controlplane.binaries import ensure_binaries
from toolshare.local.controlplane.cluster import free_port
from toolshare.local.dev import install_crds as _install_crds


def install_crds(cluster) -> None:
    """crds/ applied server-side (the one CRD source) and Established."""
    _install_crds(ensure_binaries(), cluster.kubeconfig())


def start_operator(cluster, work: Path, env: dict[str, str] | None = None) -> OperatorProcess:
    """manifests/rbac applied (with TOOLSHARE_ROUTING=gateway in `env`, its gateway rules too), then
    `toolshare operator` running as its service account with the tests' admission policy; returns
    once both webhook configurations point at it."""
    rbac.install(ensure_binaries(), cluster)
    if (env or {}).get("TOOLSHARE_ROUTING") == "gateway":
        rbac.install_gateway(ensure_binaries(), cluster)
    kubeconfig = rbac.service_account_kubeconfig(cluster, rbac.OPERATOR_NAMESPACE, rbac.OPERATOR_SA,
                                                 work / "operator.kubeconfig")
    port = free_port()
    proc = OperatorProcess(kubeconfig, work / "operator.log", env={
        "TOOLSHARE_WEBHOOK_LISTEN": f"127.0.0.1:{port}", "TOOLSHARE_WEBHOOK_CERT_DIR": str(work / "webhook"),
        **cluster.webhook_env(), **rbac.POLICY_ENV, **(env or {})})
    proc.start()
    wait_for_webhooks(cluster, port, proc)
    wait_for_principals_policy(cluster)
    return proc


def wait_for_principals_policy(cluster, timeout: float = 60) -> None:
    """Until RunShare writes come back with their principals joined (webhookconfig.principals_policy):
    the API server type-checks the policy against the CRD a few seconds after both exist, and a
    write before that goes through unjoined, which a later identical apply would then change."""
    import kubernetes

    api = kubernetes.client.CustomObjectsApi(cluster.client())
    probe = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RunShare", "metadata": {"name": "probe"},
             "spec": {"runRef": {"name": "probe"}, "users": ["bob", "carol"]}}

    def joined() -> bool:
        try:
            answer = api.create_namespaced_custom_object(GROUP, VERSION, "default", "runshares", probe, dry_run="All")
        except kubernetes.client.ApiException as e:
            if e.status == 503:  # "There can be a delay between when CustomResourceDefinitions are created
                return False     # and when they are available": Established, not yet served
            raise
        return (answer["metadata"].get("annotations") or {}).get("toolshare.dev/users") == "bob, carol"

    wait_for(joined, timeout=timeout, what="the principals policy in effect")


def resume_session_operator(cluster, operator: OperatorProcess) -> None:
    """Start the session's operator again after a module borrowed the cluster, and wait until
    admission is served as every later test expects: its webhooks, then the principals policy."""
    operator.start()
    wait_for_webhooks(cluster, webhook_port(operator), operator)
    wait_for_principals_policy(cluster)


def webhook_port(proc: OperatorProcess) -> int:
    return int(proc.env["TOOLSHARE_WEBHOOK_LISTEN"].rsplit(":", 1)[1])
