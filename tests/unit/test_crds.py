"""The CRDs explain themselves and enforce the same grammars as the Python code.

Cluster tests prove the API server accepts the CRDs and refuses bad objects; these check structure:
descriptions everywhere (kubectl explain), bounds everywhere (CEL cost), messages on every rule.
"""

import pathlib
import re

import pytest
import yaml

from toolshare import model, render
from toolshare.principals import DNS_LABEL_PATTERN, PRINCIPAL_PATTERN

CRDS = pathlib.Path(__file__).resolve().parents[2] / "crds"


def load(name):
    return yaml.safe_load((CRDS / f"{name}.toolshare.dev.yaml").read_text())


TOOLRUN, RUNSHARE = load("toolruns"), load("runshares")
BOTH = pytest.mark.parametrize("crd", [TOOLRUN, RUNSHARE], ids=["ToolRun", "RunShare"])


def version(crd):
    (v,) = crd["spec"]["versions"]
    return v


def schema(crd):
    return version(crd)["schema"]["openAPIV3Schema"]


def walk(node, path="$"):
    """Yield (path, schema) for every schema node below node, including list items and map values."""
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def rules(crd):
    for path, node in walk(schema(crd)):
        for rule in node.get("x-kubernetes-validations") or []:
            yield path, rule


def cel_regexes(crd):
    return {m for _, rule in rules(crd) for m in re.findall(r"matches\('([^']*)'\)", rule["rule"])}


@BOTH
def test_identity(crd):
    spec = crd["spec"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert spec["group"] == "toolshare.dev" and spec["scope"] == "Namespaced"
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.toolshare.dev"
    assert spec["names"]["categories"] == ["toolshare"]
    v = version(crd)
    assert v["name"] == "v1alpha1" and v["served"] and v["storage"]
    assert v["subresources"] == {"status": {}}


def test_names():
    assert TOOLRUN["spec"]["names"]["kind"] == "ToolRun"
    assert TOOLRUN["spec"]["names"]["shortNames"] == ["tr"]
    assert RUNSHARE["spec"]["names"]["kind"] == "RunShare"
    assert RUNSHARE["spec"]["names"]["shortNames"] == ["rs"]


def columns(crd, priority=0):
    return [c["name"] for c in version(crd)["additionalPrinterColumns"] if c.get("priority", 0) == priority]


def test_printer_columns():
    assert columns(TOOLRUN) == ["Owner", "URL", "Shared-With", "Ready", "Tool", "Age"]
    tool = next(c for c in version(TOOLRUN)["additionalPrinterColumns"] if c["name"] == "Tool")
    assert tool["jsonPath"] == f'.status.conditions[?(@.type=="{render.TOOL_READY}")].reason'
    assert columns(TOOLRUN, 1) == ["Reason", "Pod", "Image"]
    assert columns(RUNSHARE) == ["Run", "Selector", "Users", "Groups", "Ready", "Expires", "Age"]
    assert columns(RUNSHARE, 1) == ["Reason", "Applies-To", "Endpoints"]


@BOTH
def test_printer_columns_are_described_and_age_is_a_date(crd):
    cols = version(crd)["additionalPrinterColumns"]
    assert all(c.get("description") for c in cols)
    ready = next(c for c in cols if c["name"] == "Ready")
    assert ready["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    age = next(c for c in cols if c["name"] == "Age")
    assert age == {**age, "type": "date", "jsonPath": ".metadata.creationTimestamp"}


@BOTH
def test_every_field_has_a_description(crd):
    missing = [path for path, node in walk(schema(crd))
               if path != "$.metadata" and not path.startswith("$.metadata.")
               and not (node.get("description") or "").strip()]
    assert missing == []


@BOTH
def test_metadata_is_left_to_the_api_server(crd):
    # The API server refuses anything but name/generateName (and no description) under metadata.
    meta = schema(crd)["properties"]["metadata"]
    assert set(meta) <= {"type", "properties"} and set(meta.get("properties", {})) <= {"name", "generateName"}


@BOTH
def test_spec_is_bounded_for_the_cel_cost_estimator(crd):
    unbounded = []
    for path, node in walk(schema(crd)["properties"]["spec"], "$.spec"):
        kind = node.get("type")
        if kind == "string" and not ({"maxLength", "enum"} & set(node) or node.get("format") == "date-time"):
            unbounded.append(path)
        if kind == "array" and "maxItems" not in node:
            unbounded.append(path)
        if kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
            unbounded.append(path)
    assert unbounded == []


@BOTH
def test_preserve_unknown_fields_is_not_used(crd):
    assert not any(node.get("x-kubernetes-preserve-unknown-fields") for _, node in walk(schema(crd)))


@BOTH
def test_every_rule_has_a_human_message(crd):
    for path, rule in rules(crd):
        assert rule.get("message", "").strip(), path
        assert len(rule["message"]) > 20, path


def messages(crd):
    return " | ".join(rule["message"] for _, rule in rules(crd))


@pytest.mark.parametrize("fragment", [
    "metadata.name must be a DNS-1035 label", "owner must be a principal", "friendlyName must be a DNS-1123",
    "endpoint names must be unique", "endpoint ports must be unique", "port 22 is reserved for ssh",
    "port must be between 1 and 65535", "endpoint name must be a port name", "each needs its own path",
    "path must be /",
])
def test_toolrun_rules(fragment):
    assert fragment in messages(TOOLRUN)


@pytest.mark.parametrize("fragment", [
    "exactly one of runRef", "at least one user or group", "at most 256 users and groups",
    "users must be principals", "groups must be principals", "endpoints must be endpoint names",
    "runRef.name must be a ToolRun name", "runSelector must have matchLabels or matchExpressions",
    "In and NotIn need values",
])
def test_runshare_rules(fragment):
    assert fragment in messages(RUNSHARE)


def test_toolrun_fields():
    spec = schema(TOOLRUN)["properties"]["spec"]
    assert spec["required"] == ["image"]  # the admission webhook sets a missing owner
    assert set(spec["properties"]) == {
        "owner", "image", "command", "args", "env", "resources", "friendlyName", "endpoints", "template"}
    # spec.template offers no field that reaches the node: host namespaces are there only to be
    # refused with a message, there is no hostPort, no sysctls, no procMount, no extra containers.
    template = spec["properties"]["template"]["properties"]
    assert set(template) == {
        "volumes", "volumeMounts", "nodeSelector", "tolerations", "affinity", "serviceAccountName",
        "automountServiceAccountToken", "securityContext", "containerSecurityContext", "imagePullSecrets",
        "initContainers", "hostNetwork", "hostPID", "hostIPC"}
    assert set(template["initContainers"]["items"]["properties"]) == {
        "name", "image", "command", "args", "workingDir", "env", "resources", "volumeMounts", "securityContext"}
    assert set(template["volumes"]["items"]["properties"]) == {
        "name", "persistentVolumeClaim", "configMap", "secret", "emptyDir", "hostPath"}
    assert "sysctls" not in template["securityContext"]["properties"]
    assert set(spec["properties"]["env"]["items"]["properties"]["valueFrom"]["properties"]) == {
        "secretKeyRef", "configMapKeyRef"}
    ep = spec["properties"]["endpoints"]
    assert ep["x-kubernetes-list-map-keys"] == ["name"]
    item = ep["items"]
    assert item["required"] == ["name", "port", "protocol"]
    assert item["properties"]["protocol"]["enum"] == ["http", "https", "ssh"]
    assert (item["properties"]["port"]["minimum"], item["properties"]["port"]["maximum"]) == (1, 65535)
    assert item["properties"]["name"]["maxLength"] == model.ENDPOINT_NAME_MAX_LENGTH
    status = schema(TOOLRUN)["properties"]["status"]["properties"]
    assert set(status) == {"observedGeneration", "podPhase", "conditions", "urls", "sharedWith"}
    assert set(status["sharedWith"]["properties"]) == {"users", "groups", "summary"}
    assert set(status["conditions"]["items"]["properties"]) == {
        "type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}


def test_runshare_fields():
    spec = schema(RUNSHARE)["properties"]["spec"]
    assert set(spec["properties"]) == {"runRef", "runSelector", "users", "groups", "endpoints", "expiresAt"}
    assert spec["properties"]["expiresAt"]["format"] == "date-time"
    for field in ("users", "groups"):
        assert spec["properties"][field]["maxItems"] == model.MAX_PRINCIPALS
        assert spec["properties"][field]["items"]["maxLength"] == 253
    expr = spec["properties"]["runSelector"]["properties"]["matchExpressions"]["items"]
    assert expr["properties"]["operator"]["enum"] == list(model.SELECTOR_OPERATORS)
    status = schema(RUNSHARE)["properties"]["status"]["properties"]
    assert set(status) == {"runs", "conditions"}


def test_the_principal_regex_is_the_one_in_principals_py():
    for crd in (TOOLRUN, RUNSHARE):
        principal_rules = {r for r in cel_regexes(crd) if "@+:/" in r}
        assert principal_rules == {PRINCIPAL_PATTERN}
    # owner, users and groups all carry it.
    carriers = {path for crd in (TOOLRUN, RUNSHARE) for path, rule in rules(crd)
                if PRINCIPAL_PATTERN in rule["rule"]}
    assert carriers == {"$.spec.owner", "$.spec.users[]", "$.spec.groups[]"}


def test_the_other_grammars_match_the_renderer():
    toolrun, runshare = cel_regexes(TOOLRUN), cel_regexes(RUNSHARE)
    assert model.RUN_NAME_RE.pattern in toolrun and model.RUN_NAME_RE.pattern in runshare
    assert model.ENDPOINT_NAME_RE.pattern in toolrun and model.ENDPOINT_NAME_RE.pattern in runshare
    assert model.PATH_RE.pattern in toolrun
    assert DNS_LABEL_PATTERN in toolrun  # friendlyName
    # In YAML the label-key regex escapes its dots twice (YAML, then the CEL string literal).
    assert model._LABEL_KEY_RE.pattern in {r.replace("\\\\", "\\") for r in runshare}
