"""The Helm chart and the kustomize base as files: lint, schema, equivalence, the webhook configurations,
the Dockerfile's entry point, and the real API server's server-side dry-run of both."""

from __future__ import annotations

import base64
import difflib
import os
import re
import subprocess
import tomllib

import kubernetes
import pytest
import yaml

from tests.support import helm as h
from toolshare import grant
from toolshare.cli import main as cli
from toolshare.local.controlplane.binaries import ensure_binaries
from toolshare.local.dev import repo_root
from toolshare.settings import Settings, SettingsError

# kustomize cannot make a certificate: there the operator makes its own and keeps the configurations
# itself (--webhook-service). Nor an Ed25519 key: there the administrator creates the Secret
# toolshare-grant-key (docs/install.md), which both renders mount alike. helm install
# --create-namespace makes the namespace.
CHART_ONLY = {("Secret", "toolshare-webhook-tls"), ("Secret", "toolshare-grant-key"),
              ("MutatingWebhookConfiguration", "toolshare-admission"),
              ("ValidatingWebhookConfiguration", "toolshare-admission"),
              ("ValidatingAdmissionPolicy", "toolshare-owners"), ("ValidatingAdmissionPolicyBinding", "toolshare-owners"),
              ("MutatingAdmissionPolicy", "toolshare-principals"),
              ("MutatingAdmissionPolicyBinding", "toolshare-principals")}
KUSTOMIZE_ONLY = {("Namespace", "toolshare-system")}
WEBHOOK_ONLY_ARGS = re.compile(r"^--webhook-(cert-dir|certs|config|service)=")
POD_KEYS = ("serviceAccountName", "securityContext", "imagePullSecrets", "nodeSelector", "tolerations", "affinity")
CONTAINER_KEYS = ("name", "image", "command", "env", "ports", "livenessProbe", "readinessProbe", "resources",
                  "securityContext")
GATEWAY_RBAC = repo_root() / "manifests" / "rbac" / "operator-clusterrole-gateway.yaml"
GATEWAY_COMPONENT = repo_root() / "manifests" / "components" / "gateway"
ROUTING_ENV = ("TOOLSHARE_ROUTING", "TOOLSHARE_GATEWAY", "TOOLSHARE_GATEWAY_SECTION", "TOOLSHARE_GATEWAY_AUTH")
GATEWAY_VALUES = {"routing.backend": "gateway", "routing.gateway.name": "public",
                  "routing.gateway.namespace": "gateways", "routing.gateway.sectionName": "https"}
# settings.py's refusal of a gate URL that names no Service, for the flavours that refer to the Service.
NOT_A_SERVICE = ("the route's auth refers to the gate's Service, not a URL: the host must be the Service's cluster "
                 "DNS name, <service>.<namespace>.svc or <service>.<namespace>.svc.cluster.local")
GUARD_ENV = ("TOOLSHARE_GUARD_IMAGE", "TOOLSHARE_GRANT_KEY_FILE", "TOOLSHARE_GRANT_PUBLIC_KEY")
KEY_FILE = "/etc/toolshare/grant/grant.pem"
CHART_IMAGE = "ghcr.io/toolshare/toolshare:0.1.0"  # image.repository:appVersion, the base's image


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
                   {"webhooks.url": "https://127.0.0.1:9443", "logFormat": "json", "policy.directory.enabled": "true"},
                   {**GATEWAY_VALUES, "routing.gateway.auth": "envoy-gateway"},
                   {"guard.enabled": "false"},
                   {"guard.image": "registry.example.org/toolshare:1.2", "grantKey.existingSecret": "my-grant-key"}):
        h.helm("lint", "--strict", str(h.CHART), *h.set_args(values))


@pytest.mark.parametrize("values, message", [
    ({"gate.replcias": "3"}, "additional properties 'replcias' not allowed"),
    ({"config.baseDomain": "Example.ORG"}, "at '/config/baseDomain': 'Example.ORG' does not match pattern"),
    ({"gate.replicas": "0"}, "at '/gate/replicas'"),
    ({"logFormat": "xml"}, "at '/logFormat'"),
    ({"policy.trustedAppliers[0]": "robot"}, "at '/policy/trustedAppliers/0': 'robot' does not match"),
    ({"routing.backend": "foo"}, "at '/routing/backend': value must be one of 'ingress', 'gateway'"),
    ({"routing.backend": "gateway"}, "at '/routing/gateway/name': minLength: got 0, want 1"),
    ({"routing.backend": "gateway", "routing.gateway.name": "public"},
     "at '/routing/gateway/namespace': minLength: got 0, want 1"),
    ({**GATEWAY_VALUES, "routing.gateway.auth": "bogus"},
     "at '/routing/gateway/auth': value must be one of 'external-auth', 'traefik', 'envoy-gateway'"),
    ({**GATEWAY_VALUES, "routing.gateway.name": "Public"}, "at '/routing/gateway/name': 'Public' does not match"),
    ({**GATEWAY_VALUES, "routing.gateway.namespace": "gate.ways"},
     "at '/routing/gateway/namespace': 'gate.ways' does not match"),
    ({**GATEWAY_VALUES, "routing.gateway.sectionName": "Web Listener"},
     "at '/routing/gateway/sectionName': 'Web Listener' does not match"),
    ({"routing.gatway.name": "public"}, "at '/routing': additional properties 'gatway' not allowed"),
    ({"guard.enabled": "yes"}, "at '/guard/enabled': got string, want boolean"),
    ({"guard.image": "Registry.example.org/toolshare"}, "at '/guard/image': 'Registry.example.org/toolshare' does not match"),
    ({"guard.image": "toolshare; rm -rf /"}, "at '/guard/image'"),
    ({"guard.imgae": "toolshare:1"}, "at '/guard': additional properties 'imgae' not allowed"),
    ({"grantKey.existingSecret": "My_Key"}, "at '/grantKey/existingSecret': 'My_Key' does not match"),
    ({"grantKey.secret": "k"}, "at '/grantKey': additional properties 'secret' not allowed"),
])
def test_values_are_validated_by_the_schema(values, message):
    proc = h.helm("template", "t", str(h.CHART), *h.set_args(values), check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def _env_by_name(docs: list[dict]) -> list[dict]:
    """The Deployments' env sorted by name: a strategic merge patch (an overlay's, a component's) puts
    the entries it names first, which changes nothing the container sees (no env refers to another)."""
    docs = [yaml.safe_load(yaml.safe_dump(d)) for d in docs]
    for d in docs:
        if d["kind"] == "Deployment":
            for c in d["spec"]["template"]["spec"]["containers"]:
                c["env"] = sorted(c.get("env", []), key=lambda e: e["name"])
    return docs


def _assert_same_install(chart_docs: list[dict], kust_docs: list[dict], what: str) -> None:
    chart, kust = h.by_key(chart_docs), h.by_key(kust_docs)
    assert set(chart) - set(kust) == CHART_ONLY
    assert set(kust) - set(chart) == KUSTOMIZE_ONLY
    diffs = []
    for key in sorted(set(chart) & set(kust)):
        a, b = (yaml.safe_dump(essence(o[key]), sort_keys=True).splitlines() for o in (chart, kust))
        if a != b:
            diffs.append("\n".join(difflib.unified_diff(a, b, f"helm template {key}", f"kubectl kustomize {key}",
                                                        lineterm="")))
    assert not diffs, f"{what}:\n" + "\n\n".join(diffs)


def test_kustomize_base_is_the_chart_defaults():
    _assert_same_install(h.template()[1], h.kustomize()[1], "manifests/ differs from the chart's defaults")


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
    webhookconfig.py's for the same policy: names, rules, paths (the server routes by the last path
    segment), policies and the matchConditions' CEL."""
    from toolshare.admission import webhookconfig
    from toolshare.policy import Policy

    chart = h.by_key(h.template(values)[1])
    policy = Policy.from_env({e["name"]: e.get("value", "") for e in _env(chart[("Deployment", "toolshare-operator")])})
    ca = chart[("Secret", "toolshare-webhook-tls")]["data"]["ca.crt"]
    client = {"service": {"namespace": "toolshare-system", "name": "toolshare-webhook", "port": 443}, "caBundle": ca}
    for expected in webhookconfig.configurations("toolshare-admission", client, policy):
        actual = chart[(expected["kind"], "toolshare-admission")]["webhooks"]
        assert sorted(actual, key=lambda w: w["name"]) == sorted(expected["webhooks"], key=lambda w: w["name"])
    for expected in webhookconfig.owner_policy("toolshare-owners", policy):
        assert chart[(expected["kind"], "toolshare-owners")]["spec"] == expected["spec"]
    for expected in webhookconfig.principals_policy("toolshare-principals"):
        assert chart[(expected["kind"], "toolshare-principals")]["spec"] == expected["spec"]


def test_webhook_configurations_route_to_the_served_hooks():
    """Every configured webhook's path is a hook the operator serves, for the resource it is
    configured for, mutating or validating alike; and no hook is served that nothing calls."""
    from toolshare.admission import webhookconfig, webhooks

    assert {(i, p) for i, p, _ in webhookconfig.HOOKS} == {(i, p) for i, (p, _) in webhooks.HOOKS.items()}
    mutating = {i for i, _, m in webhookconfig.HOOKS if m}
    assert mutating == {"toolrun-owner", "imageshare-owner", "runshare-sharer"}


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
    text, docs = h.template({**GATEWAY_VALUES, "routing.gateway.auth": "traefik"}, namespace=namespace)
    assert ("ClusterRole", "toolshare-operator-gateway") in h.by_key(docs)
    assert _dry_run(cluster, text).count("(server dry run)") == len(docs)


def _env(deployment: dict) -> list[dict]:
    return deployment["spec"]["template"]["spec"]["containers"][0]["env"]


def _settings(env: list[dict], key_pem: bytes | None = None) -> Settings:
    """The operator's settings from a rendered env, validated as at start-up (Settings.__post_init__).
    Given TOOLSHARE_GRANT_KEY_FILE and no public key, the operator derives TOOLSHARE_GRANT_PUBLIC_KEY
    from the key (cli/main.py): here `key_pem`, the rendered Secret's, or a new key where the render
    holds none (kustomize, grantKey.existingSecret: the administrator's Secret)."""
    values = {e["name"]: e.get("value", "") for e in env}
    if values.get("TOOLSHARE_GRANT_KEY_FILE") and not values.get("TOOLSHARE_GRANT_PUBLIC_KEY"):
        key = grant.load_private(key_pem) if key_pem is not None else grant.new_key()
        values["TOOLSHARE_GRANT_PUBLIC_KEY"] = grant.public_text(key)
    return Settings.from_env(values)


def _mounted_key(deployment: dict, docs: dict) -> bytes | None:
    """The file TOOLSHARE_GRANT_KEY_FILE names, followed through the container's mount and the pod's
    volume to the Secret: its content when the render holds that Secret, else None."""
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    path = next(e["value"] for e in container["env"] if e["name"] == "TOOLSHARE_GRANT_KEY_FILE")
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/"))
    assert mount.get("readOnly") is True, mount
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    secret = docs.get(("Secret", volume["secret"]["secretName"]))
    return None if secret is None else base64.b64decode(secret["data"][path[len(mount["mountPath"]):].lstrip("/")])


def _operator_settings(docs: dict, name: str = "toolshare-operator") -> Settings:
    """What the rendered operator Deployment would start with, its key read from the rendered Secret."""
    deployment = docs[("Deployment", name)]
    env = _env(deployment)
    key = _mounted_key(deployment, docs) if any(e["name"] == "TOOLSHARE_GRANT_KEY_FILE" for e in env) else None
    return _settings(env, key)


def _source(kind: str, path=GATEWAY_RBAC) -> dict:
    return next(d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == kind)


def test_default_render_is_ingress_routing_without_the_gateway_rules():
    docs = h.by_key(h.template()[1])
    assert not [k for k in docs if k[1].endswith("-operator-gateway")]
    env = _env(docs[("Deployment", "toolshare-operator")])
    assert [e for e in env if e["name"] in ROUTING_ENV] == [{"name": "TOOLSHARE_ROUTING", "value": "ingress"}]
    assert not _operator_settings(docs).gateway_routing
    # The gate routes nothing: it gets the shared settings only.
    assert not [e for e in _env(docs[("Deployment", "toolshare-gate")]) if e["name"] in ROUTING_ENV]


@pytest.mark.parametrize("auth", ["external-auth", "traefik", "envoy-gateway"])
def test_gateway_backend_renders_the_routing_env_and_the_gateway_rules(auth):
    docs = h.by_key(h.template({**GATEWAY_VALUES, "routing.gateway.auth": auth}, release="lab",
                               namespace="tools")[1])
    env = _env(docs[("Deployment", "lab-toolshare-operator")])
    assert [e for e in env if e["name"] in ROUTING_ENV] == [
        {"name": "TOOLSHARE_ROUTING", "value": "gateway"}, {"name": "TOOLSHARE_GATEWAY", "value": "gateways/public"},
        {"name": "TOOLSHARE_GATEWAY_SECTION", "value": "https"}, {"name": "TOOLSHARE_GATEWAY_AUTH", "value": auth}]
    settings = _operator_settings(docs, "lab-toolshare-operator")  # what the operator would start with: accepted
    assert settings.gateway_routing and settings.gateway_ref == ("gateways", "public")
    assert (settings.gateway_section, settings.gateway_auth) == ("https", auth)
    if auth != "traefik":  # the default gate URL is this release's Service
        assert settings.gate_service == ("lab-toolshare-gate", "tools", 8080, "")
    role = docs[("ClusterRole", "lab-toolshare-operator-gateway")]
    assert role["rules"] == _source("ClusterRole")["rules"]
    binding = docs[("ClusterRoleBinding", "lab-toolshare-operator-gateway")]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "lab-toolshare-operator-gateway"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "lab-toolshare-operator", "namespace": "tools"}]


@pytest.mark.parametrize("auth, gate_url, refused", [
    ("envoy-gateway", "http://10.0.0.7:8080", True),
    ("envoy-gateway", "http://gate.example.org", True),
    ("envoy-gateway", "http://Gate.tools.svc", True),
    ("envoy-gateway", "http://1gate.tools.svc", True),  # a Service name starts with a letter
    ("envoy-gateway", "http://gate.tools.svc:0", True),
    ("envoy-gateway", "http://gate.tools.svc:65536", True),
    ("envoy-gateway", "http://gate.tools.svc.cluster.local:8080/prefix", False),
    ("envoy-gateway", "https://gate.tools.svc", False),
    ("external-auth", "http://10.0.0.7:8080", True),
    ("external-auth", "http://gate.tools.svc.cluster.local:65535", False),
    ("traefik", "http://10.0.0.7:8080", False),  # calls the URL: any address will do
])
def test_a_gate_url_is_refused_by_the_chart_exactly_when_the_operator_would(auth, gate_url, refused):
    try:
        Settings.from_env({"TOOLSHARE_ROUTING": "gateway", "TOOLSHARE_GATEWAY": "gateways/public",
                           "TOOLSHARE_GATEWAY_AUTH": auth, "TOOLSHARE_GATE_URL": gate_url})
        message = None
    except SettingsError as e:
        message = str(e)
    assert (message is not None) == refused, message
    values = {**GATEWAY_VALUES, "routing.gateway.auth": auth, "config.gateUrl": gate_url}
    proc = h.helm("template", "t", str(h.CHART), *h.set_args(values), check=False)
    if not refused:
        assert proc.returncode == 0, proc.stderr
        docs = h.by_key([d for d in yaml.safe_load_all(proc.stdout) if d])
        assert _operator_settings(docs, "t-toolshare-operator").gate_url == gate_url
    else:
        assert NOT_A_SERVICE in message
        assert proc.returncode != 0 and NOT_A_SERVICE in proc.stderr, proc.stderr
        assert f"config.gateUrl: gate_url (TOOLSHARE_GATE_URL='{gate_url}')" in proc.stderr, proc.stderr
        assert f"TOOLSHARE_GATEWAY_AUTH={auth} " in proc.stderr


def _overlay(directory, patch: dict | None = None):
    """A user's overlay of the base with the gateway component, `directory` anywhere (relative paths)."""
    directory.mkdir(parents=True, exist_ok=True)
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "resources": [os.path.relpath(h.MANIFESTS, directory)],
                     "components": [os.path.relpath(GATEWAY_COMPONENT, directory)]}
    if patch is not None:
        kustomization["patches"] = [{"patch": yaml.safe_dump(patch)}]
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return directory


def _operator_env_patch(env: dict[str, str]) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "toolshare-operator", "namespace": "toolshare-system"},
            "spec": {"template": {"spec": {"containers": [
                {"name": "operator", "env": [{"name": k, "value": v} for k, v in env.items()]}]}}}}


def test_kustomize_gateway_component_adds_the_rules_and_waits_for_a_gateway(tmp_path):
    docs = h.by_key(h.kustomize(_overlay(tmp_path / "bare"))[1])
    assert docs[("ClusterRole", "toolshare-operator-gateway")]["rules"] == _source("ClusterRole")["rules"]
    binding, source = docs[("ClusterRoleBinding", "toolshare-operator-gateway")], _source("ClusterRoleBinding")
    assert (binding["roleRef"], binding["subjects"]) == (source["roleRef"], source["subjects"])
    env = _env(docs[("Deployment", "toolshare-operator")])
    assert [e for e in env if e["name"] in ROUTING_ENV] == [
        {"name": "TOOLSHARE_ROUTING", "value": "gateway"}, {"name": "TOOLSHARE_GATEWAY", "value": ""},
        {"name": "TOOLSHARE_GATEWAY_SECTION", "value": ""}, {"name": "TOOLSHARE_GATEWAY_AUTH", "value": "external-auth"}]
    with pytest.raises(SettingsError, match=r"TOOLSHARE_GATEWAY=''\): is required with TOOLSHARE_ROUTING=gateway"):
        _settings(env)  # the placeholder: the operator refuses to start until the overlay names the Gateway


@pytest.mark.parametrize("auth", ["traefik", "envoy-gateway"])
def test_kustomize_gateway_overlay_is_the_chart_with_backend_gateway(tmp_path, auth):
    overlay = _overlay(tmp_path / "overlay", _operator_env_patch({
        "TOOLSHARE_GATEWAY": "gateways/public", "TOOLSHARE_GATEWAY_SECTION": "https", "TOOLSHARE_GATEWAY_AUTH": auth}))
    kust = h.kustomize(overlay)[1]
    assert _operator_settings(h.by_key(kust)).guarded  # accepted, once the administrator's key is there
    _assert_same_install(_env_by_name(h.template({**GATEWAY_VALUES, "routing.gateway.auth": auth})[1]),
                         _env_by_name(kust), "the gateway component differs from the chart with routing.backend=gateway")


def _guard_env(deployment: dict) -> list[dict]:
    return [e for e in _env(deployment) if e["name"] in GUARD_ENV]


def _grant_volumes(deployment: dict) -> tuple[list[dict], list[dict]]:
    pod = deployment["spec"]["template"]["spec"]
    return ([v for v in pod["volumes"] if v["name"] == "grant-key"],
            [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "grant-key"])


def test_the_guard_is_on_by_default_with_a_key_helm_made():
    docs = h.by_key(h.template(release="lab", namespace="tools")[1])
    secret = docs[("Secret", "lab-toolshare-grant-key")]
    assert secret["metadata"]["namespace"] == "tools" and secret["type"] == "Opaque"
    assert set(secret["data"]) == {"grant.pem"}
    pem = base64.b64decode(secret["data"]["grant.pem"])
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, genPrivateKey "ed25519"
    key = grant.load_private(pem)  # what the gate does with it (cli/main.py _gate)
    gate, operator = docs[("Deployment", "lab-toolshare-gate")], docs[("Deployment", "lab-toolshare-operator")]
    for deployment in (gate, operator):
        pod = deployment["spec"]["template"]["spec"]
        # The Secret's files are root's; fsGroup makes 10001 their group, which 0440 lets read.
        assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] == 10001
        assert _grant_volumes(deployment) == (
            [{"name": "grant-key", "secret": {"secretName": "lab-toolshare-grant-key", "defaultMode": 0o440}}],
            [{"name": "grant-key", "mountPath": "/etc/toolshare/grant", "readOnly": True}])
        assert _mounted_key(deployment, docs) == pem
    assert _guard_env(gate) == [{"name": "TOOLSHARE_GRANT_KEY_FILE", "value": KEY_FILE}]
    assert _guard_env(operator) == [{"name": "TOOLSHARE_GUARD_IMAGE", "value": CHART_IMAGE},
                                    {"name": "TOOLSHARE_GRANT_KEY_FILE", "value": KEY_FILE}]
    settings = _operator_settings(docs, "lab-toolshare-operator")
    assert settings.guarded and settings.guard_image == CHART_IMAGE
    assert settings.grant_public_key == grant.public_text(key)
    # Without the key the guard image alone is refused: the operator needs both (settings.py).
    with pytest.raises(SettingsError, match="go together"):
        Settings.from_env({e["name"]: e["value"] for e in _env(operator) if e["name"] != "TOOLSHARE_GRANT_KEY_FILE"})


@pytest.mark.parametrize("values, image", [
    ({"image.repository": "registry.example.org/tools/toolshare", "image.tag": "2.0"},
     "registry.example.org/tools/toolshare:2.0"),
    ({"guard.image": "registry.example.org/guard:1@sha256:" + "a" * 64}, "registry.example.org/guard:1@sha256:" + "a" * 64),
])
def test_the_guard_runs_the_charts_image_unless_told(values, image):
    docs = h.by_key(h.template(values)[1])
    assert _operator_settings(docs).guard_image == image


def test_guard_disabled_renders_no_guard_and_no_key():
    """Off means no key anywhere: the operator derives a public key from any key it is given, which
    settings.py refuses without a guard image, and a gate with no guard to follow needs none."""
    docs = h.by_key(h.template({"guard.enabled": "false"})[1])
    assert not [k for k in docs if k[0] == "Secret" and k[1] != "toolshare-webhook-tls"]
    for name in ("toolshare-gate", "toolshare-operator"):
        assert _guard_env(docs[("Deployment", name)]) == []
        assert _grant_volumes(docs[("Deployment", name)]) == ([], [])
    assert not _operator_settings(docs).guarded


def test_an_existing_grant_key_secret_is_mounted_and_none_is_made():
    docs = h.by_key(h.template({"grantKey.existingSecret": "my-grant-key"})[1])
    assert not [k for k in docs if k[0] == "Secret" and k[1] != "toolshare-webhook-tls"]
    for name in ("toolshare-gate", "toolshare-operator"):
        volumes, mounts = _grant_volumes(docs[("Deployment", name)])
        assert [v["secret"]["secretName"] for v in volumes] == ["my-grant-key"] and len(mounts) == 1
        assert {"name": "TOOLSHARE_GRANT_KEY_FILE", "value": KEY_FILE} in _env(docs[("Deployment", name)])
    assert _operator_settings(docs).guarded  # with the administrator's key


@pytest.mark.parametrize("values, where", [
    ({"image.repository": "Registry.example.org/toolshare"}, "image.repository, image.tag"),
    ({"image.tag": "1.0 beta"}, "image.repository, image.tag"),
])
def test_a_guard_image_is_refused_by_the_chart_exactly_when_the_operator_would(values, where):
    """The schema checks guard.image; the chart's own image (the default guard) only the template can."""
    image = f"{values.get('image.repository', 'ghcr.io/toolshare/toolshare')}:{values.get('image.tag', '0.1.0')}"
    with pytest.raises(SettingsError) as refused:
        Settings(guard_image=image, grant_public_key=grant.public_text(grant.new_key()))
    words = f"guard_image (TOOLSHARE_GUARD_IMAGE='{image}'): must be an image reference"
    assert words in str(refused.value)
    proc = h.helm("template", "t", str(h.CHART), *h.set_args(values), check=False)
    assert proc.returncode != 0 and f"{where}" in proc.stderr and words in proc.stderr, proc.stderr
    assert h.helm("template", "t", str(h.CHART), *h.set_args({**values, "guard.enabled": "false"}), check=False).returncode == 0


def test_kustomize_base_runs_guarded_and_an_overlay_sets_the_guard_image_with_images(tmp_path):
    """`images:` rewrites container images, not env values: an overlay that moves the image patches
    TOOLSHARE_GUARD_IMAGE too (docs/install.md, "The run guard")."""
    base = h.by_key(h.kustomize()[1])
    operator = base[("Deployment", "toolshare-operator")]
    assert _guard_env(operator) == [{"name": "TOOLSHARE_GUARD_IMAGE", "value": CHART_IMAGE},
                                    {"name": "TOOLSHARE_GRANT_KEY_FILE", "value": KEY_FILE}]
    assert operator["spec"]["template"]["spec"]["containers"][0]["image"] == CHART_IMAGE
    assert _mounted_key(operator, base) is None  # toolshare-grant-key: the administrator's
    moved = "registry.example.org/toolshare:0.1.0"
    images = [{"name": "ghcr.io/toolshare/toolshare", "newName": "registry.example.org/toolshare"}]
    for patched in (False, True):
        directory = tmp_path / ("patched" if patched else "images-only")
        directory.mkdir()
        kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                         "resources": [os.path.relpath(h.MANIFESTS, directory)], "images": images}
        if patched:
            kustomization["patches"] = [{"patch": yaml.safe_dump(_operator_env_patch({"TOOLSHARE_GUARD_IMAGE": moved}))}]
        (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
        docs = h.by_key(h.kustomize(directory)[1])
        for name in ("toolshare-gate", "toolshare-operator"):
            assert docs[("Deployment", name)]["spec"]["template"]["spec"]["containers"][0]["image"] == moved
        assert _operator_settings(docs).guard_image == (moved if patched else CHART_IMAGE)
