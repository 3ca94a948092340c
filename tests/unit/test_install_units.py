"""Installation pieces that need no cluster: generated copies, webhook flags, JSON logs, gate metrics."""

from __future__ import annotations

import json
import logging

import pytest

from toolshare import logs
from toolshare.admission.certs import provided_certs
from toolshare.admission.webhooks import WebhookConfig, parse_service
from toolshare.gate import metrics as gate_metrics
from toolshare.local import syncmanifests


def test_generated_copies_match_their_sources():
    stale = syncmanifests.drift()
    assert not stale, (f"generated copies are out of date: {', '.join(stale)}.\n"
                       f"Regenerate them with: {syncmanifests.REGENERATE}")


def test_drift_is_detected_and_named(tmp_path):
    for rel in ("crds", "manifests/rbac", "manifests/gate"):
        (tmp_path / rel).mkdir(parents=True)
        for src in (syncmanifests.ROOT / rel).glob("*.yaml"):
            (tmp_path / rel / src.name).write_text(src.read_text())
    syncmanifests.write(tmp_path)
    assert syncmanifests.drift(tmp_path) == []
    crd = tmp_path / "crds" / "toolruns.toolshare.dev.yaml"
    crd.write_text(crd.read_text().replace("shortNames: [tr]", "shortNames: [tr, trun]"))
    assert sorted(syncmanifests.drift(tmp_path)) == ["charts/toolshare/templates/crds/toolruns.toolshare.dev.yaml",
                                                       "manifests/crds/toolruns.toolshare.dev.yaml"]


def test_chart_crd_is_the_source_wrapped_and_annotated():
    source = syncmanifests.ROOT / "crds" / "runshares.toolshare.dev.yaml"
    text = syncmanifests.chart_crd(source.relative_to(syncmanifests.ROOT), source.read_text())
    body = text.split("{{- if .Values.crds.enabled }}\n", 1)[1].rsplit("{{- end }}", 1)[0]
    unwrapped = body.replace(syncmanifests._KEEP, "")
    assert unwrapped.rstrip("\n") == source.read_text().rstrip("\n")
    with pytest.raises(ValueError, match="template"):
        syncmanifests.chart_crd(source, "metadata:\n  name: '{{ x }}'\n")


def test_webhook_service_and_provided_certs(tmp_path):
    assert parse_service("toolshare-system/toolshare-webhook") == ("toolshare-system", "toolshare-webhook", 443)
    assert parse_service("ns/svc:8443") == ("ns", "svc", 8443)
    for bad in ("svc", "ns/svc:0", "/svc", "ns/:1"):
        with pytest.raises(ValueError, match="TOOLSHARE_WEBHOOK_SERVICE"):
            parse_service(bad)
    config = WebhookConfig.from_env({"TOOLSHARE_WEBHOOK_SERVICE": "ts/hooks", "TOOLSHARE_WEBHOOK_CERTS": "provided"})
    assert (config.advertised_host, config.certs) == ("hooks.ts.svc", "provided")
    with pytest.raises(ValueError, match="TOOLSHARE_WEBHOOK_CERTS"):
        WebhookConfig.from_env({"TOOLSHARE_WEBHOOK_CERTS": "maybe"})
    with pytest.raises(ValueError, match="tls.crt, tls.key missing"):
        provided_certs(tmp_path)
    (tmp_path / "tls.crt").write_text("c")
    (tmp_path / "tls.key").write_text("k")
    assert provided_certs(tmp_path) == (None, tmp_path / "tls.crt", tmp_path / "tls.key")


def test_json_logs_are_one_object_per_line(capsys):
    logs.configure("json")
    try:
        logging.getLogger("toolshare.test").warning("reconciled %s", "lab/alice-notebook")
    finally:
        logs.configure("text")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["level"] == "WARNING" and record["logger"] == "toolshare.test"
    assert record["message"] == "reconciled lab/alice-notebook" and record["time"]


def test_gate_metrics_count_decisions_by_result():
    def count(result):
        return gate_metrics.DECISIONS.labels(result)._value.get()

    before = {r: count(r) for r in gate_metrics.RESULTS.values()}
    for status in (202, 202, 403, 401, 503):
        gate_metrics.record(status, 0.002)
    after = {r: count(r) for r in gate_metrics.RESULTS.values()}
    assert {r: after[r] - before[r] for r in after} == {
        "allowed": 2, "denied": 1, "unauthenticated": 1, "unavailable": 1}
    body, content_type = gate_metrics.exposition()
    assert b'toolshare_gate_decisions_total{result="allowed"}' in body and content_type.startswith("text/plain")
    assert b"toolshare_gate_decision_duration_seconds_bucket" in body



def test_observability_examples_and_docs_use_only_real_metrics():
    import re

    import prometheus_client

    import toolshare.admission.server  # noqa: F401  (registers the webhook server's metrics)
    import toolshare.controller.metrics  # noqa: F401  (registers the operator's metrics)

    registered = {m.name for m in prometheus_client.REGISTRY.collect() if m.name.startswith("toolshare_")}
    examples = syncmanifests.ROOT / "examples" / "observability"
    text = (examples / "prometheusrule.yaml").read_text() + (examples / "grafana-dashboard.json").read_text()
    used = {re.sub(r"_(bucket|count|sum|total)$", "", m) for m in re.findall(r"toolshare_[a-z_]+", text)}
    assert used - registered == set() and {"toolshare_gate_decisions", "toolshare_reconciles"} <= used
    documented = set(re.findall(r"^\| `(toolshare_[a-z_]+)`", (syncmanifests.ROOT / "docs" / "metrics.md").read_text(),
                                re.MULTILINE))
    counters = {m.name for m in prometheus_client.REGISTRY.collect() if m.type == "counter"}
    names = {n + "_total" if n in counters else n for n in registered}
    assert documented == names


def test_every_chart_value_has_a_described_schema():
    import yaml

    chart = syncmanifests.ROOT / "charts" / "toolshare"
    schema = json.loads((chart / "values.schema.json").read_text())
    values = yaml.safe_load((chart / "values.yaml").read_text())

    def walk(value, node, path):
        assert node.get("description"), f"{path or '/'} has no description in values.schema.json"
        if isinstance(value, dict) and node.get("properties"):
            assert node.get("additionalProperties") is False, f"{path}: additionalProperties must be false"
            if value:  # an empty default ({}) is an optional object, e.g. certManager.issuerRef
                assert set(value) == set(node["properties"]) - {"global"}, path
            for key, sub in value.items():
                walk(sub, node["properties"][key], f"{path}/{key}")

    schema["description"] = schema["title"]
    walk(values, schema, "")


def test_chart_routing_values_mirror_the_operators_settings():
    """values.yaml's routing block and its schema: the operator's choices, defaults and name checks
    (settings.py), and the Gateway required with backend gateway."""
    import re

    import yaml

    from toolshare import settings
    from toolshare.principals import is_dns_label

    chart = syncmanifests.ROOT / "charts" / "toolshare"
    schema = json.loads((chart / "values.schema.json").read_text())["properties"]["routing"]
    values = yaml.safe_load((chart / "values.yaml").read_text())["routing"]
    default, gateway = settings.Settings(), schema["properties"]["gateway"]["properties"]
    assert schema["properties"]["backend"]["enum"] == list(settings.ROUTING_BACKENDS)
    assert gateway["auth"]["enum"] == list(settings.GATEWAY_AUTH_FLAVOURS)
    assert (values["backend"], values["gateway"]["auth"]) == (default.routing, default.gateway_auth)
    assert values["gateway"] == {"name": "", "namespace": "", "sectionName": "", "auth": default.gateway_auth}

    def allowed(node, value):
        return len(value) <= node["maxLength"] and re.search(node["pattern"], value) is not None

    samples = ("", "public", "gw.example.org", "a-b", "a", "a" * 63, "a" * 64, "a." * 126 + "a", "Public", "-a",
               "a-", "a_b", "a b", "a/b", ".a", "a..b", "web;x")
    for value in samples:
        subdomain = value == "" or settings._is_subdomain(value)
        assert allowed(gateway["name"], value) == subdomain, value
        assert allowed(gateway["sectionName"], value) == subdomain, value
        assert allowed(gateway["namespace"], value) == (value == "" or is_dns_label(value)), value
    assert schema["if"] == {"properties": {"backend": {"const": "gateway"}}, "required": ["backend"]}
    required = schema["then"]["properties"]["gateway"]
    assert required["required"] == ["name", "namespace"]
    assert required["properties"] == {"name": {"minLength": 1}, "namespace": {"minLength": 1}}


def test_kustomize_gateway_component_switches_the_base_to_gateway_routing():
    """The component's env patch, merged by name into the base's (as kustomize does), is gateway mode
    that the operator refuses until an overlay names the Gateway, and accepts once it does."""
    import dataclasses

    import yaml

    from toolshare import grant
    from toolshare.settings import Settings, SettingsError

    manifests = syncmanifests.ROOT / "manifests"
    component = manifests / "components" / "gateway"

    def env_of(path):
        deployment = next(d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "Deployment")
        return {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}

    base, patch = env_of(manifests / "operator" / "operator.yaml"), env_of(component / "operator-env.yaml")
    # The base runs guarded: the operator derives the guards' public key from the key file (the
    # administrator's Secret toolshare-grant-key; cli/main.py), here a new key.
    assert base["TOOLSHARE_GUARD_IMAGE"] and base["TOOLSHARE_GRANT_KEY_FILE"]
    base["TOOLSHARE_GRANT_PUBLIC_KEY"] = grant.public_text(grant.new_key())
    assert base["TOOLSHARE_ROUTING"] == "ingress" and not Settings.from_env(base).gateway_routing
    assert set(patch) <= {f.metadata["env"] for f in dataclasses.fields(Settings)}
    assert patch == {"TOOLSHARE_ROUTING": "gateway", "TOOLSHARE_GATEWAY": "", "TOOLSHARE_GATEWAY_SECTION": "",
                     "TOOLSHARE_GATEWAY_AUTH": Settings().gateway_auth}
    with pytest.raises(SettingsError, match=r"TOOLSHARE_GATEWAY=''\): is required with TOOLSHARE_ROUTING=gateway"):
        Settings.from_env({**base, **patch})
    assert Settings.from_env({**base, **patch, "TOOLSHARE_GATEWAY": "gateways/public"}).gateway_ref == (
        "gateways", "public")
    kustomization = yaml.safe_load((component / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    assert kustomization["resources"] == ["operator-clusterrole-gateway.yaml"]
    assert kustomization["patches"] == [{"path": "operator-env.yaml"}]
    assert "components" not in yaml.safe_load((manifests / "kustomization.yaml").read_text())  # the base: ingress
