"""The ImageShare CRD explains itself like the others, and ToolRun's owner is optional and immutable."""

from __future__ import annotations

import pytest

from tests.unit.test_crds import TOOLRUN, columns, load, rules, schema, version, walk
from toolshare.principals import PRINCIPAL_PATTERN

IMAGESHARE = load("imageshares")


def test_identity_and_names():
    spec = IMAGESHARE["spec"]
    assert IMAGESHARE["metadata"]["name"] == "imageshares.toolshare.dev"
    assert spec["group"] == "toolshare.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "ImageShare" and spec["names"]["shortNames"] == ["is"]
    assert spec["names"]["categories"] == ["toolshare"]
    assert version(IMAGESHARE)["subresources"] == {"status": {}}


def test_printer_columns_show_whom_the_image_is_shared_with():
    assert columns(IMAGESHARE) == ["Image", "Owner", "Shared-With", "Ready", "Age"]
    cols = {c["name"]: c for c in version(IMAGESHARE)["additionalPrinterColumns"]}
    assert cols["Shared-With"]["jsonPath"] == ".status.sharedWith.summary"
    assert all(c.get("description") for c in cols.values())


def test_every_field_is_described_and_bounded():
    for path, node in walk(schema(IMAGESHARE)):
        if path != "$.metadata":
            assert (node.get("description") or "").strip(), path
    for path, node in walk(schema(IMAGESHARE)["properties"]["spec"], "$.spec"):
        if node.get("type") == "string":
            assert "maxLength" in node, path
        if node.get("type") == "array":
            assert "maxItems" in node, path


def test_principals_use_the_one_grammar():
    regexes = {r["rule"] for path, r in rules(IMAGESHARE) if path.startswith(("$.spec.users", "$.spec.groups", "$.spec.owner"))}
    assert regexes == {f"self.matches('{PRINCIPAL_PATTERN}')"}


@pytest.mark.parametrize("crd", [TOOLRUN, IMAGESHARE], ids=["ToolRun", "ImageShare"])
def test_owner_is_optional_and_immutable(crd):
    spec = schema(crd)["properties"]["spec"]
    assert "owner" not in spec.get("required", [])
    assert any("oldSelf.owner" in r["rule"] and r["message"] == "spec.owner is immutable"
               for r in spec["x-kubernetes-validations"])
