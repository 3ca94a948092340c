"""`helm install` for real.

The product as Pods (`test_the_chart_runs_the_product_as_pods`, on the session cluster and its
node): the chart's operator and gate run from the Toolshare image built here, the API server calls
the admission webhooks in the operator Pod through the chart's Service, and a run is shared end to
end through Traefik and the gate Pods. For this module the session's operator (a local process)
hands the cluster over to the release, and takes it back afterwards.

On a control plane of their own (no node, nothing of the session's in the way): the chart's CRDs
are installed and kept on uninstall, and the kustomize base's operator, run as its Deployment says,
writes Service-referencing webhook configurations.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes
import pytest

from tests.support import cluster as support, helm as h, rbac
from tests.support.install import resume_session_operator
from tests.support.objects import GROUP, VERSION, Toolshare, runshare, toolrun
from tests.support.operator_process import WEBHOOK_CONFIG
from tests.support.rbac import bind_edit, service_account_kubeconfig
from tests.support.routing import through
from tests.support.tools import echo_run, routed
from tests.support.wait import wait_for
from toolshare import grant
from toolshare.local import services as devservices
from toolshare.local.controlplane import cluster as controlplane, node as nodemod
from toolshare.local.controlplane.binaries import ensure_binaries
from toolshare.local.controlplane.cluster import free_port
from toolshare.local.images import catalog

NS = "toolshare-system"  # the kustomize base's namespace, and the own cluster's release
# The release the node runs: named so that its objects (helm-toolshare-*) sit beside the session's
# toolshare-* ones; only the user ClusterRoles (toolshare-edit, toolshare-view) are shared names.
POD_RELEASE, POD_NS = "helm", "toolshare-helm"
FULLNAME = "helm-toolshare"
USER_ROLES = ("toolshare-edit", "toolshare-view")


@pytest.fixture(scope="module")
def own_cluster():
    directory = Path(tempfile.mkdtemp(prefix="toolshare-helm-"))
    controlplane.up(directory)
    tc = support.TestCluster(directory / "kubeconfig", directory, local_dir=directory)
    yield tc
    support.stop(tc)


def chart_image(cluster) -> dict[str, str]:
    """The image values: the Toolshare image built here and imported into the node (no registry, so
    pullPolicy Never), or on another cluster TOOLSHARE_TEST_IMAGE, which that cluster can pull."""
    given = os.environ.get("TOOLSHARE_TEST_IMAGE")
    if given:
        repository, tag = given.rsplit(":", 1)
        return {"image.repository": repository, "image.tag": tag, "image.pullPolicy": "IfNotPresent"}
    if cluster.local_dir is None:
        raise RuntimeError("TOOLSHARE_TEST_IMAGE must name a Toolshare image the cluster can pull (build it "
                           "from the Dockerfile, or `toolshare images build --only toolshare` for an archive "
                           "to load into kind or k3d)")
    controlplane.import_images(cluster.local_dir, (catalog.TOOLSHARE,))
    repository, tag = catalog.TOOLSHARE.rsplit(":", 1)
    return {"image.repository": repository, "image.tag": tag, "image.pullPolicy": "Never"}


@pytest.fixture(scope="module")
def handed_over(cluster, operator):
    """The cluster without the session's operator: it stops, its webhook configurations go (they
    would refuse every write with nobody serving them), and the user ClusterRoles applied from
    manifests/rbac make way for the release's. Afterwards all three come back as they were."""
    adm = kubernetes.client.AdmissionregistrationV1Api(cluster.client())
    roles = kubernetes.client.RbacAuthorizationV1Api(cluster.client())
    operator.stop()
    for name in USER_ROLES:
        _delete(roles.delete_cluster_role, name)
    _delete(adm.delete_validating_webhook_configuration, WEBHOOK_CONFIG)
    _delete(adm.delete_mutating_webhook_configuration, WEBHOOK_CONFIG)
    try:
        yield
    finally:
        rbac.install(ensure_binaries(), cluster)
        resume_session_operator(cluster, operator)


def _rolled_out(deployment, replicas: int) -> bool:
    st = deployment.status
    return (st.observed_generation == deployment.metadata.generation and deployment.spec.replicas == replicas
            and st.updated_replicas == st.ready_replicas == st.replicas == replicas)


def _delete(delete, name: str) -> None:
    try:
        delete(name)
    except kubernetes.client.ApiException as e:
        if e.status != 404:
            raise


def test_the_chart_runs_the_product_as_pods(cluster, handed_over, router, issuer, namespace, tmp_path):
    # The gate Pods ask oauth2-proxy who is calling: one listening where Pods reach this machine.
    address = os.environ.get("TOOLSHARE_TEST_HOST_ADDRESS") or nodemod.node_ip()
    proxy = devservices.oauth2_proxy(issuer.url, tmp_path, host=address).start()
    values = {**chart_image(cluster), "crds.enabled": "false",  # the session's, from crds/
              "gate.replicas": "2", "gate.oauth2ProxyUrl": f"{proxy.url}/oauth2/auth"}
    kubeconfig = cluster.kubeconfig()
    core, apps = kubernetes.client.CoreV1Api(cluster.client()), kubernetes.client.AppsV1Api(cluster.client())
    client_ca = cluster.webhook_env().get("TOOLSHARE_WEBHOOK_CLIENT_CA")
    try:
        if client_ca:  # the operator Pod answers only the API server's webhook client (docs/admission.md)
            core.create_namespace({"metadata": {"name": POD_NS}})
            core.create_namespaced_config_map(POD_NS, {"metadata": {"name": "webhook-client-ca"},
                                                       "data": {"ca.crt": Path(client_ca).read_text()}})
            values["webhooks.clientAuth.caConfigMap"] = "webhook-client-ca"
        # --wait: both Deployments available, so the operator Pod serves its webhooks and each gate
        # Pod's /readyz (its watches in sync) answers.
        h.helm("install", POD_RELEASE, str(h.CHART), "-n", POD_NS, "--create-namespace", *h.set_args(values),
               "--wait", "--timeout", "6m", kubeconfig=kubeconfig)
        expected = sorted(f"{d['kind']}/{d['metadata']['name']}"
                          for d in h.template(values, release=POD_RELEASE, namespace=POD_NS)[1])
        assert _release_objects(cluster, POD_RELEASE) == expected
        pods = core.list_namespaced_pod(POD_NS, label_selector=f"app.kubernetes.io/instance={POD_RELEASE}").items
        assert sorted(p.metadata.labels["app.kubernetes.io/component"] for p in pods) == ["gate", "gate", "operator"]
        for pod in pods:
            assert pod.status.phase == "Running" and pod.spec.containers[0].image == f"{values['image.repository']}:{values['image.tag']}"
        adm = kubernetes.client.AdmissionregistrationV1Api(cluster.client())
        for config in (adm.read_validating_webhook_configuration(f"{FULLNAME}-admission"),
                       adm.read_mutating_webhook_configuration(f"{FULLNAME}-admission")):
            for w in config.webhooks:
                assert (w.client_config.service.namespace, w.client_config.service.name) == (POD_NS, f"{FULLNAME}-webhook")
                assert not w.client_config.url

        bind_edit(cluster, namespace, users=["alice", "carol"])
        alice, admin = Toolshare(cluster.client("alice"), namespace), Toolshare(cluster.client(), namespace)
        run = echo_run("notebook")
        del run["spec"]["owner"]
        # The owner is filled in by the mutating webhook, served by the operator Pod (to the API
        # server's client certificate only, when the cluster is the local one).
        if client_ca:
            assert "--webhook-client-ca=/etc/toolshare/webhook-client/ca.crt" in \
                apps.read_namespaced_deployment(f"{FULLNAME}-operator", POD_NS).spec.template.spec.containers[0].args
        assert alice.create(run)["spec"]["owner"] == "alice"
        # carol, who may edit the namespace, may not name alice as an owner.
        with pytest.raises(kubernetes.client.ApiException) as refused:
            Toolshare(cluster.client("carol"), namespace).create(echo_run("forged", owner="alice"))
        assert refused.value.status in (400, 403, 422) and "owner" in refused.value.body

        # helm upgrade: the Deployments roll, and the new operator Pod renders with the new values.
        # auth-url names the gate Service by its ClusterIP: Traefik runs on this machine, which has
        # no cluster DNS (in a cluster the default, the Service's DNS name, is right).
        gate_ip = core.read_namespaced_service(f"{FULLNAME}-gate", POD_NS).spec.cluster_ip
        h.helm("upgrade", POD_RELEASE, str(h.CHART), "-n", POD_NS, "--reuse-values", "--wait", "--timeout", "6m",
               *h.set_args({"gate.replicas": "3", "config.baseDomain": "apps.example.org",
                            "config.gateUrl": f"http://{gate_ip}:8080"}), kubeconfig=kubeconfig)
        wait_for(lambda: _rolled_out(apps.read_namespaced_deployment(f"{FULLNAME}-gate", POD_NS), 3),
                 what="the gate rolled out with 3 replicas")
        wait_for(lambda: (admin.annotations("notebook").get("lab") or {}).get(
            "nginx.ingress.kubernetes.io/auth-url", "").startswith(f"http://{gate_ip}:8080/check/"),
            timeout=60, what="the Ingress asking the release's gate")
        host = routed(admin, "notebook")
        assert host.endswith(".apps.example.org")

        # Through Traefik, the gate Pods decide.
        def visit(person):
            return through(router, host, "/lab/tree", issuer.token(person))[:3:2]

        wait_for(lambda: visit("alice")[0] == 200, what="alice through Traefik and the gate Pods")
        assert visit("alice")[1] == "hello from notebook to alice at /lab/tree\n"
        assert visit("bob")[0] == 403 and visit("carol")[0] == 403
        alice.create(runshare("notebook-for-bob", run="notebook", users=["bob"]))
        wait_for(lambda: visit("bob")[0] == 200, what="bob let in by the gate Pods after the share")
        assert visit("carol")[0] == 403
        alice.delete("runshares", "notebook-for-bob")
        wait_for(lambda: visit("bob")[0] == 403, what="bob refused after the unshare")
    finally:
        uninstalled = h.helm("uninstall", POD_RELEASE, "-n", POD_NS, "--wait", kubeconfig=kubeconfig, check=False)
        proxy.stop()
        _delete(core.delete_namespace, POD_NS)
    assert uninstalled.returncode == 0, uninstalled.stderr
    assert _release_objects(cluster, POD_RELEASE) == []
    assert admin.get("toolruns", "notebook") is not None  # the release goes; what users made stays


def test_the_chart_installs_the_crds_and_keeps_them_on_uninstall(own_cluster):
    tc = own_cluster
    values = {"webhooks.enabled": "false"}  # nobody serves them on this control plane
    h.helm("install", "toolshare", str(h.CHART), "-n", NS, "--create-namespace", *h.set_args(values),
           kubeconfig=tc.kubeconfig())
    docs = h.template(values)[1]
    assert _release_objects(tc, "toolshare") == sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs
                                                      if d["kind"] != "CustomResourceDefinition")
    ext = kubernetes.client.ApiextensionsV1Api(tc.client())
    crds = {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert crds == {"toolruns.toolshare.dev", "runshares.toolshare.dev", "imageshares.toolshare.dev"}
    wait_for(lambda: all(any(c.type == "Established" and c.status == "True"
                             for c in ext.read_custom_resource_definition(n).status.conditions or []) for n in crds),
             what="the chart's CRDs Established")
    kubernetes.client.CoreV1Api(tc.client()).create_namespace({"metadata": {"name": "lab"}})
    api = kubernetes.client.CustomObjectsApi(tc.client())
    wait_for(lambda: _created(api, toolrun("notebook")), what="a ToolRun accepted by the chart's CRD")

    h.helm("uninstall", "toolshare", "-n", NS, "--wait", kubeconfig=tc.kubeconfig())
    assert _release_objects(tc, "toolshare") == []
    assert {c.metadata.name for c in ext.list_custom_resource_definition().items} == crds  # crds.keep
    runs = api.list_namespaced_custom_object(GROUP, VERSION, "lab", "toolruns")
    assert [r["metadata"]["name"] for r in runs["items"]] == ["notebook"]


def _created(api, obj: dict) -> bool:
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, "lab", "toolruns", obj)
        return True
    except kubernetes.client.ApiException as e:
        if e.status in (404, 503):  # Established, not yet served
            return False
        raise


class Installed:
    """The kustomize base's operator as a local process, configured from its live Deployment."""

    def __init__(self, tc: support.TestCluster, work: Path, webhook_port: int):
        self.tc, self.work, self.webhook_port = tc, work, webhook_port
        self.apps = kubernetes.client.AppsV1Api(tc.client())
        self.procs: list[devservices.Service] = []

    def start_operator(self) -> devservices.Service:
        c = self.apps.read_namespaced_deployment("toolshare-operator", NS).spec.template.spec.containers[0]
        health = free_port()
        replace = {"--liveness": f"--liveness=http://127.0.0.1:{health}/healthz",
                   "--metrics-port": f"--metrics-port={free_port()}",
                   "--webhook-listen": f"--webhook-listen=127.0.0.1:{self.webhook_port}",
                   "--webhook-cert-dir": f"--webhook-cert-dir={self.work / 'webhook-tls'}"}
        args = [replace.get(a.split("=", 1)[0], a) for a in c.args]
        env = {e.name: e.value or "" for e in c.env or []}
        if env.get("TOOLSHARE_GRANT_KEY_FILE"):  # the Secret toolshare-grant-key's mount in the Pod; here a key file
            key_file = self.work / "grant.pem"
            key_file.write_bytes(grant.private_pem(grant.new_key()))
            env["TOOLSHARE_GRANT_KEY_FILE"] = str(key_file)
        sa = service_account_kubeconfig(self.tc, NS, "toolshare-operator", self.work / "operator.kubeconfig")
        argv = [sys.executable, "-m", "toolshare.cli.main", *c.command[1:], *args, "--kubeconfig", str(sa)]
        svc = devservices.Service("operator", argv, f"http://127.0.0.1:{health}/healthz",
                                  self.work / "operator.log", env=env).start()
        self.procs.append(svc)
        wait_for(lambda: devservices.listening(self.webhook_port), timeout=60, what="the operator's webhook server")
        return svc

    def stop(self) -> None:
        for p in self.procs:
            p.stop()
        self.procs.clear()


def _release_objects(tc, release: str) -> list[str]:
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
    return sorted(f"{kind}/{o.metadata.name}" for kind, fn in lists.items() for o in fn(label_selector=f"app.kubernetes.io/instance={release}").items)


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
