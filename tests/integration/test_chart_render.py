"""The Helm chart and the kustomize base as files: lint, schema, equivalence, the webhook configurations,
the Dockerfile's entry point, and the real API server's server-side dry-run of both."""

from __future__ import annotations

import base64
import difflib
import re
import subprocess
import tomllib

import kubernetes
import pytest
import yaml

from tests.support import helm as h
from toolshare.cli import main as cli
from toolshare.local.controlplane.binaries import ensure_binaries
from toolshare.local.dev import repo_root

# kustomize cannot make a certificate: there the operator makes its own and keeps the configurations
# itself (--webhook-service). helm install --create-namespace makes the namespace.
CHART_ONLY = {("Secret", "toolshare-webhook-tls"), ("MutatingWebhookConfiguration", "toolshare-admission"),
              ("ValidatingWebhookConfiguration", "toolshare-admission"),
              ("ValidatingAdmissionPolicy", "toolshare-owners"), ("ValidatingAdmissionPolicyBinding", "toolshare-owners"),
              ("MutatingAdmissionPolicy", "toolshare-principals"),
              ("MutatingAdmissionPolicyBinding", "toolshare-principals")}
KUSTOMIZE_ONLY = {("Namespace", "toolshare-system")}
WEBHOOK_ONLY_ARGS = re.compile(r"^--webhook-(cert-dir|certs|config|service)=")
POD_KEYS = ("serviceAccountName", "securityContext", "imagePullSecrets", "nodeSelector", "tolerations", "affinity")
CONTAINER_KEYS = ("name", "image", "command", "env", "ports", "livenessProbe", "readinessProbe", "resources",
                  "securityContext")


def _selector(sel: dict) -> dict:
    sel = sel.get("matchLabels", sel)
    return {k: v for k, v in sel.items() if k != "app.kubernetes.io/instance"}


def essence(obj: dict) -> dict:
    """What must agree between the chart and kustomize: everything but labels, webhook plumbing."""
    kind, meta = obj["kind"], obj["metadata"]
    out: dict = {"namespace": meta.get("namespace")}
    if kind in ("ClusterRole", "Role"):
        out["rules"] = obj["rules"]
        out["aggregate"] = {k: v for k, v in (meta.get("labels") or {}).items() if k.startswith("rbac.")}
    elif kind in ("ClusterRoleBinding", "RoleBinding"):
        out.update(roleRef=obj["roleRef"], subjects=obj["subjects"])
    elif kind == "Deployment":
        pod = obj["spec"]["template"]["spec"]
        out.update(replicas=obj["spec"].get("replicas"), strategy=obj["spec"].get("strategy"),
                   selector=_selector(obj["spec"]["selector"]), pod={k: pod.get(k) for k in POD_KEYS},
                   volumes=[v for v in pod.get("volumes", []) if v["name"] != "webhook-tls"])
        out["containers"] = [{**{k: c.get(k) for k in CONTAINER_KEYS},
                              "args": [a for a in c.get("args", []) if not WEBHOOK_ONLY_ARGS.match(a)],
                              "volumeMounts": [m for m in c.get("volumeMounts", []) if m["name"] != "webhook-tls"]}
                             for c in pod["containers"]]
    elif kind == "Service":
        out.update(ports=obj["spec"]["ports"], selector=_selector(obj["spec"]["selector"]))
    elif kind == "PodDisruptionBudget":
        out.update({k: v for k, v in obj["spec"].items() if k != "selector"}, selector=_selector(obj["spec"]["selector"]))
    elif kind == "CustomResourceDefinition":
        out["spec"] = obj["spec"]
    return out


def test_helm_lint_strict_with_defaults_and_every_option():
    h.helm("lint", "--strict", str(h.CHART))
    for values in ({"certManager.enabled": "true", "metrics.serviceMonitor.enabled": "true"},
                   {"webhooks.enabled": "false", "crds.enabled": "false", "gate.pdb.enabled": "false"},
                   {"webhooks.url": "https://127.0.0.1:9443", "logFormat": "json", "policy.directory.enabled": "true"}):
        h.helm("lint", "--strict", str(h.CHART), *h.set_args(values))


@pytest.mark.parametrize("values, message", [
    ({"gate.replcias": "3"}, "additional properties 'replcias' not allowed"),
    ({"config.baseDomain": "Example.ORG"}, "at '/config/baseDomain': 'Example.ORG' does not match pattern"),
    ({"gate.replicas": "0"}, "at '/gate/replicas'"),
    ({"logFormat": "xml"}, "at '/logFormat'"),
    ({"policy.trustedAppliers[0]": "robot"}, "at '/policy/trustedAppliers/0': 'robot' does not match"),
])
def test_values_are_validated_by_the_schema(values, message):
    proc = h.helm("template", "t", str(h.CHART), *h.set_args(values), check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_kustomize_base_is_the_chart_defaults():
    chart, kust = h.by_key(h.template()[1]), h.by_key(h.kustomize()[1])
    assert set(chart) - set(kust) == CHART_ONLY
    assert set(kust) - set(chart) == KUSTOMIZE_ONLY
    diffs = []
    for key in sorted(set(chart) & set(kust)):
        a, b = (yaml.safe_dump(essence(o[key]), sort_keys=True).splitlines() for o in (chart, kust))
        if a != b:
            diffs.append("\n".join(difflib.unified_diff(a, b, f"helm template {key}", f"kubectl kustomize {key}",
                                                        lineterm="")))
    assert not diffs, "manifests/ differs from the chart's defaults:\n" + "\n\n".join(diffs)


def test_chart_rbac_is_the_least_privilege_of_manifests():
    chart = h.by_key(h.template()[1])
    for name in ("toolshare-operator", "toolshare-gate", "toolshare-edit", "toolshare-view"):
        source = next(d for p in (repo_root() / "manifests").glob("*/*.yaml")
                      for d in yaml.safe_load_all(p.read_text())
                      if d and d.get("kind") == "ClusterRole" and d["metadata"]["name"] == name)
        assert chart[("ClusterRole", name)]["rules"] == source["rules"], name


@pytest.mark.parametrize("values", [
    {},
    {"policy.adminGroups": "{platform,toolshare:admins}",
     "policy.trustedAppliers": "{group:flux-appliers=team-a,serviceaccount:argocd/app=team-b,group:b-appliers}"},
])
def test_webhook_configurations_are_what_the_operator_would_write(values):
    """The chart writes them (the operator runs with --webhook-config=none), so they must be exactly
    webhookconfig.py's for the same policy: names, rules, paths (kopf routes by the last path
    segment), policies and the matchConditions' CEL."""
    from toolshare.admission import webhookconfig
    from toolshare.policy import Policy

    chart = h.by_key(h.template(values)[1])
    env = chart[("Deployment", "toolshare-operator")]["spec"]["template"]["spec"]["containers"][0]["env"]
    policy = Policy.from_env({e["name"]: e.get("value", "") for e in env})
    ca = chart[("Secret", "toolshare-webhook-tls")]["data"]["ca.crt"]
    client = {"service": {"namespace": "toolshare-system", "name": "toolshare-webhook", "port": 443}, "caBundle": ca}
    for expected in webhookconfig.configurations("toolshare-admission", client, policy):
        actual = chart[(expected["kind"], "toolshare-admission")]["webhooks"]
        assert sorted(actual, key=lambda w: w["name"]) == sorted(expected["webhooks"], key=lambda w: w["name"])
    for expected in webhookconfig.owner_policy("toolshare-owners", policy):
        assert chart[(expected["kind"], "toolshare-owners")]["spec"] == expected["spec"]
    for expected in webhookconfig.principals_policy("toolshare-principals"):
        assert chart[(expected["kind"], "toolshare-principals")]["spec"] == expected["spec"]


def test_webhook_configurations_route_to_kopfs_handlers():
    """Every configured webhook's path is a handler id kopf serves, mutating or validating alike."""
    import kopf

    import toolshare.admission.webhooks  # noqa: F401  (registers the handlers)
    from toolshare.admission import webhookconfig

    handlers = kopf.get_default_registry()._webhooks.get_all_handlers()
    served = {(h.id, h.reason.value == "mutating", h.selector.any_name) for h in handlers}
    assert served == {(i, m, p) for i, p, m in webhookconfig.HOOKS}


def test_webhook_certificate_is_signed_for_the_service_and_kept_across_renders():
    from cryptography import x509

    chart = h.by_key(h.template()[1])
    data = chart[("Secret", "toolshare-webhook-tls")]["data"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
    ca = x509.load_pem_x509_certificate(base64.b64decode(data["ca.crt"]))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "toolshare-webhook.toolshare-system.svc" in sans
    cert.verify_directly_issued_by(ca)
    cm = h.by_key(h.template({"certManager.enabled": "true"})[1])
    assert ("Secret", "toolshare-webhook-tls") not in cm and cm[("Certificate", "toolshare-webhook")]["spec"]["secretName"] == "toolshare-webhook-tls"
    annotations = cm[("ValidatingWebhookConfiguration", "toolshare-admission")]["metadata"]["annotations"]
    assert annotations == {"cert-manager.io/inject-ca-from": "toolshare-system/toolshare-webhook"}
    assert all("caBundle" not in w["clientConfig"] for w in cm[("ValidatingWebhookConfiguration", "toolshare-admission")]["webhooks"])


def test_crds_switches():
    keep = h.by_key(h.template()[1])[("CustomResourceDefinition", "toolruns.toolshare.dev")]
    assert keep["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert not h.by_key(h.template({"crds.keep": "false"})[1])[("CustomResourceDefinition", "toolruns.toolshare.dev")]["metadata"].get("annotations")
    assert not [d for d in h.template({"crds.enabled": "false"})[1] if d["kind"] == "CustomResourceDefinition"]


def test_servicemonitors_only_when_asked():
    assert not [d for d in h.template()[1] if d["kind"] == "ServiceMonitor"]
    monitors = [d for d in h.template({"metrics.serviceMonitor.enabled": "true"})[1] if d["kind"] == "ServiceMonitor"]
    assert sorted((m["metadata"]["name"], m["spec"]["endpoints"][0]["port"]) for m in monitors) == [
        ("toolshare-gate", "metrics"), ("toolshare-operator", "metrics")]


def test_dockerfile_and_chart_run_the_same_commands():
    """The chart's commands are console scripts the Dockerfile installs, and their arguments parse."""
    dockerfile = (repo_root() / "Dockerfile").read_text()
    scripts = tomllib.loads((repo_root() / "pyproject.toml").read_text())["project"]["scripts"]
    cmd = yaml.safe_load(re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE).group(1))
    assert cmd[0] in scripts and "/opt/toolshare/bin/pip install --no-cache-dir ." in dockerfile
    assert re.search(r"^ENV PATH=/opt/toolshare/bin:", dockerfile, re.MULTILINE)
    assert re.search(r"^USER 10001:10001$", dockerfile, re.MULTILINE)
    parser = cli.build_parser()
    for values in ({}, {"webhooks.enabled": "false", "gate.signinUrl": "https://auth.example.org/oauth2/start"}):
        for d in h.template(values)[1]:
            if d["kind"] != "Deployment":
                continue
            pod = d["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsUser"] == 10001
            for c in pod["containers"]:
                assert c["command"][0] in scripts, c["command"]
                parser.parse_args(c["command"][1:] + c.get("args", []))  # exits (fails) on an unknown flag


def _dry_run(cluster, text: str) -> str:
    kubectl = ensure_binaries().path("kubectl")
    proc = subprocess.run([str(kubectl), "apply", "--server-side", "--force-conflicts", "--dry-run=server",
                           "--field-manager=chart-test",
                           "-f", "-"], input=text, capture_output=True, text=True, env=cluster.env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_rendered_chart_and_kustomize_are_accepted_by_the_api_server(cluster, namespace):
    text, docs = h.template({"certManager.enabled": "false"}, namespace=namespace)
    out = _dry_run(cluster, text)
    assert out.count("(server dry run)") == len(docs)
    core = kubernetes.client.CoreV1Api(cluster.client())
    try:
        core.create_namespace({"metadata": {"name": "toolshare-system"}})
    except kubernetes.client.ApiException as e:
        assert e.status == 409  # the session operator's RBAC made it already
    text, docs = h.kustomize()
    assert _dry_run(cluster, text).count("(server dry run)") == len(docs)
