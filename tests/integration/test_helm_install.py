"""`helm install` for real, on a control plane of its own (the session cluster's webhook
configurations belong to the session operator; this one belongs to the chart).

No kubelet runs pods here, so the chart's operator and gate run as local processes with exactly
what the installed Deployments say (args, env) and the chart's service-account tokens. The chart
is installed with `webhooks.url` pointing at the local operator: the API server then calls it with
the chart's own configurations and Helm-made certificate (the Secret, mounted into the pod in a
cluster, is copied to a directory here). Webhooks stay on, so admission is part of what is proved.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import kubernetes
import pytest

from tests.support import cluster as support, helm as h
from tests.support.install import wait_for_principals_policy
from tests.support.objects import GROUP, VERSION, Toolshare, runshare, toolrun
from tests.support.rbac import bind_edit, service_account_kubeconfig
from tests.support.wait import wait_for
from toolshare.local import services as devservices
from toolshare.local.controlplane import cluster as controlplane
from toolshare.local.controlplane.binaries import ensure_binaries
from toolshare.local.controlplane.cluster import free_port

NS, RELEASE = "toolshare-system", "toolshare"
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"


@pytest.fixture(scope="module")
def own_cluster():
    directory = Path(tempfile.mkdtemp(prefix="toolshare-helm-"))
    controlplane.up(directory)
    tc = support.TestCluster(directory / "kubeconfig", directory, local_dir=directory)
    yield tc
    support.stop(tc)


class Installed:
    """The release's operator and gate as local processes, configured from the live Deployments."""

    def __init__(self, tc: support.TestCluster, work: Path, webhook_port: int):
        self.tc, self.work, self.webhook_port = tc, work, webhook_port
        self.apps = kubernetes.client.AppsV1Api(tc.client())
        self.core = kubernetes.client.CoreV1Api(tc.client())
        self.procs: list[devservices.Service] = []

    def container(self, component: str):
        return self.apps.read_namespaced_deployment(f"{RELEASE}-{component}", NS).spec.template.spec.containers[0]

    def _certs(self) -> Path:
        directory = self.work / "webhook-tls"
        directory.mkdir(exist_ok=True)
        for key, value in self.core.read_namespaced_secret(f"{RELEASE}-webhook-tls", NS).data.items():
            (directory / key).write_bytes(base64.b64decode(value))
        return directory

    def _argv(self, component: str, replace: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        c = self.container(component)
        args = [replace.get(a.split("=", 1)[0], a) for a in c.args]
        env = {e.name: e.value or "" for e in c.env or []}
        sa = self.work / f"{component}.kubeconfig"
        service_account_kubeconfig(self.tc, NS, f"{RELEASE}-{component}", sa)
        return [sys.executable, "-m", "toolshare.cli.main", *c.command[1:], *args, "--kubeconfig", str(sa)], env

    def start_operator(self) -> devservices.Service:
        health = free_port()
        self.metrics_port = free_port()
        provided = "--webhook-certs=provided" in self.container("operator").args  # else it makes its own
        cert_dir = self._certs() if provided else self.work / "webhook-tls"
        argv, env = self._argv("operator", {
            "--liveness": f"--liveness=http://127.0.0.1:{health}/healthz",
            "--metrics-port": f"--metrics-port={self.metrics_port}",
            "--webhook-listen": f"--webhook-listen=127.0.0.1:{self.webhook_port}",
            "--webhook-cert-dir": f"--webhook-cert-dir={cert_dir}"})
        svc = devservices.Service("operator", argv, f"http://127.0.0.1:{health}/healthz",
                                  self.work / "operator.log", env=env).start()
        self.procs.append(svc)
        # Live (kopf's probe) comes before the webhook server listens; the chart's configurations
        # already point at it, so a write before then is refused.
        wait_for(lambda: _listening(self.webhook_port), timeout=60, what="the operator's webhook server")
        return svc

    def start_gate(self) -> devservices.Service:
        port, ops = free_port(), free_port()
        argv, env = self._argv("gate", {"--listen": f"--listen=127.0.0.1:{port}",
                                        "--ops-listen": f"--ops-listen=127.0.0.1:{ops}"})
        svc = devservices.Service("gate", argv, f"http://127.0.0.1:{ops}/readyz", self.work / "gate.log",
                                  env=env).start()
        svc.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        svc.ops_url = f"http://127.0.0.1:{ops}"  # type: ignore[attr-defined]
        self.procs.append(svc)
        return svc

    def stop(self) -> None:
        for p in self.procs:
            p.stop()
        self.procs.clear()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _release_objects(tc) -> list[str]:
    """Every object labelled with the release, in the kinds the chart makes (namespaced and not)."""
    core, apps = kubernetes.client.CoreV1Api(tc.client()), kubernetes.client.AppsV1Api(tc.client())
    rbac, adm = kubernetes.client.RbacAuthorizationV1Api(tc.client()), kubernetes.client.AdmissionregistrationV1Api(tc.client())
    policy = kubernetes.client.PolicyV1Api(tc.client())
    lists = {
        "Deployment": apps.list_deployment_for_all_namespaces, "Service": core.list_service_for_all_namespaces,
        "ServiceAccount": core.list_service_account_for_all_namespaces, "Secret": core.list_secret_for_all_namespaces,
        "Role": rbac.list_role_for_all_namespaces, "RoleBinding": rbac.list_role_binding_for_all_namespaces,
        "ClusterRole": rbac.list_cluster_role, "ClusterRoleBinding": rbac.list_cluster_role_binding,
        "PodDisruptionBudget": policy.list_pod_disruption_budget_for_all_namespaces,
        "ValidatingWebhookConfiguration": adm.list_validating_webhook_configuration,
        "MutatingWebhookConfiguration": adm.list_mutating_webhook_configuration,
        "ValidatingAdmissionPolicy": adm.list_validating_admission_policy,
        "ValidatingAdmissionPolicyBinding": adm.list_validating_admission_policy_binding,
        "MutatingAdmissionPolicy": adm.list_mutating_admission_policy,
        "MutatingAdmissionPolicyBinding": adm.list_mutating_admission_policy_binding,
    }
    return sorted(f"{kind}/{o.metadata.name}" for kind, fn in lists.items() for o in fn(label_selector=INSTANCE).items)


def test_install_reconcile_upgrade_uninstall(own_cluster, tmp_path):
    tc = own_cluster
    port = free_port()
    values = {"webhooks.url": f"https://127.0.0.1:{port}", "gate.replicas": "2",
              "policy.trustedAppliers[0]": "group:gitops"}
    h.helm("install", RELEASE, str(h.CHART), "-n", NS, "--create-namespace", *h.set_args(values),
           kubeconfig=tc.kubeconfig())
    expected = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in h.template(values)[1]
                      if d["kind"] != "CustomResourceDefinition")
    assert _release_objects(tc) == expected

    installed = Installed(tc, tmp_path, port)
    try:
        installed.start_operator()
        # Installed together with its CRD, the principals policy acts (and RunShares are served to
        # it) a few seconds later; until then a RunShare write is answered 503, as for any new CRD.
        wait_for_principals_policy(tc)
        kubernetes.client.CoreV1Api(tc.client()).create_namespace({"metadata": {"name": "lab"}})
        bind_edit(tc, "lab", users=["alice"])
        alice = Toolshare(tc.client("alice"), "lab")
        run = toolrun("notebook")
        del run["spec"]["owner"]
        created = alice.create(run)
        assert created["spec"]["owner"] == "alice"  # the chart's mutating webhook, served by the operator
        alice.create(runshare("notebook-for-bob", run="notebook", users=["bob"]))
        ingress = wait_for(lambda: alice.annotations("notebook").get("lab", {}).get("toolshare.dev/allowed-users") == "bob"
                           and alice.ingresses("notebook")["lab"], timeout=60, what="the shared Ingress")
        assert ingress["spec"]["rules"][0]["host"].endswith(".toolshare.localhost")
        auth_url = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/auth-url"]
        assert auth_url.startswith(f"http://{RELEASE}-gate.{NS}.svc.cluster.local:8080/check/lab/notebook/lab")
        wait_for(lambda: (alice.condition("runshares", "notebook-for-bob") or {}).get("status") == "True",
                 timeout=60, what="RunShare Ready")
        # The operator counts an active share after writing its status, and posts Shared after that.
        admin = Toolshare(tc.client(), "lab")
        wait_for(lambda: any(r == "Shared" for r, _ in admin.events("notebook")), timeout=60, what="Shared event")
        # Started now, the gate counts what its first lists hold: /readyz answers only after them.
        gate = installed.start_gate()  # /readyz: its RBAC lets it list and watch what it needs
        with urllib.request.urlopen(f"http://127.0.0.1:{installed.metrics_port}/metrics", timeout=5) as r:
            assert "toolshare_active_shares 1.0" in r.read().decode()
        with urllib.request.urlopen(f"{gate.ops_url}/metrics", timeout=5) as r:
            assert "toolshare_gate_runs 1.0" in r.read().decode()
        # carol may not name alice as owner: admission runs through the chart's configuration.
        with pytest.raises(kubernetes.client.ApiException) as refused:
            Toolshare(tc.client("carol"), "lab").create(toolrun("x", owner="alice"))
        assert refused.value.status == 403

        # helm upgrade: changed values reach the Deployments, and the restarted operator uses them.
        h.helm("upgrade", RELEASE, str(h.CHART), "-n", NS, "--reuse-values",
               *h.set_args({"gate.replicas": "3", "config.baseDomain": "apps.example.org"}), kubeconfig=tc.kubeconfig())
        assert installed.apps.read_namespaced_deployment(f"{RELEASE}-gate", NS).spec.replicas == 3
        env = {e.name: e.value for e in installed.container("operator").env}
        assert env["TOOLSHARE_BASE_DOMAIN"] == "apps.example.org"
        installed.stop()
        installed.start_operator()
        wait_for(lambda: (alice.ingresses("notebook").get("lab") or {}).get("spec", {}).get("rules", [{}])[0]
                 .get("host", "").endswith(".apps.example.org"), timeout=60, what="the Ingress on the new base domain")
    finally:
        installed.stop()

    h.helm("uninstall", RELEASE, "-n", NS, "--wait", kubeconfig=tc.kubeconfig())
    assert _release_objects(tc) == []
    ext = kubernetes.client.ApiextensionsV1Api(tc.client())
    kept = {c.metadata.name for c in ext.list_custom_resource_definition().items}
    assert kept == {"toolruns.toolshare.dev", "runshares.toolshare.dev", "imageshares.toolshare.dev"}  # crds.keep
    runs = kubernetes.client.CustomObjectsApi(tc.client()).list_namespaced_custom_object(GROUP, VERSION, "lab", "toolruns")
    assert [r["metadata"]["name"] for r in runs["items"]] == ["notebook"]


def test_kustomize_base_operator_keeps_service_webhooks(own_cluster, tmp_path):
    """`kubectl apply -k manifests/`, then the operator as its Deployment says: it makes its own
    certificate and writes the configurations named toolshare.dev with a Service reference (no pod
    serves that Service here, so the configurations are removed again at the end)."""
    tc = own_cluster
    kubectl = str(ensure_binaries().path("kubectl"))
    proc = subprocess.run([kubectl, "apply", "--server-side", "--force-conflicts", "-k", str(h.MANIFESTS)],
                          capture_output=True, text=True, env=tc.env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    installed = Installed(tc, tmp_path, free_port())
    adm = kubernetes.client.AdmissionregistrationV1Api(tc.client())
    try:
        installed.start_operator()
        configs = wait_for(lambda: _managed_configs(adm), timeout=60, what="toolshare.dev configurations")
        ca = base64.b64encode((tmp_path / "webhook-tls" / "ca.crt").read_bytes()).decode()
        paths = set()
        for config in configs:
            for w in config.webhooks:
                svc = w.client_config.service
                assert (svc.namespace, svc.name, svc.port) == (NS, "toolshare-webhook", 443) and not w.client_config.url
                assert w.client_config.ca_bundle == ca
                paths.add(svc.path)
        assert paths == {"/toolrun-owner", "/imageshare-owner", "/runshare-sharer",
                         "/toolrun-admission", "/imageshare-admission", "/runshare-admission"}
    finally:
        installed.stop()
        for delete in (adm.delete_validating_webhook_configuration, adm.delete_mutating_webhook_configuration):
            try:
                delete("toolshare.dev")
            except kubernetes.client.ApiException as e:
                assert e.status == 404


def _managed_configs(adm):
    try:
        configs = [adm.read_validating_webhook_configuration("toolshare.dev"),
                   adm.read_mutating_webhook_configuration("toolshare.dev")]
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return None
        raise
    return configs if all(c.webhooks and c.webhooks[0].client_config.ca_bundle for c in configs) else None
