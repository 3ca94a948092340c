"""The package's rooms and the walls between them, checked from the import statements.

- Pure modules (the model, the access decisions, the renderers, the admission decisions, the
  gate's decisions) import no Kubernetes client, no kopf, no aiohttp, and only other pure modules.
- The product never imports the one-machine environment (toolshare.local) or the CLI.
- The controller, admission and the gate never import each other: they read the cluster through
  toolshare.state (or their own watch, for the gate) and decide with the pure modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import toolshare

ROOT = Path(toolshare.__file__).parent
PURE = {"toolshare.model", "toolshare.access", "toolshare.principals", "toolshare.policy", "toolshare.settings",
        "toolshare.conditions", "toolshare.images", "toolshare.render", "toolshare.admission.decisions",
        "toolshare.admission.directory", "toolshare.gate.verdict", "toolshare.gate.shared", "toolshare.gate.page",
        "toolshare.grant", "toolshare.guard.config", "toolshare.sharing", "toolshare.gate.csrf", "toolshare.gate.forms",
        "toolshare.gate.owner", "toolshare.podtemplate"}
IMPURE_LIBRARIES = {"kopf", "kubernetes", "aiohttp", "urllib3", "prometheus_client", "requests"}
ISOLATED = ("toolshare.controller", "toolshare.admission", "toolshare.gate", "toolshare.guard")
NOT_PRODUCT = ("toolshare.local", "toolshare.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """Every module `name` imports, anywhere in its body (lazy imports too), resolved to full names."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            # `from toolshare.x import y` may import the module toolshare.x.y
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
    return found


def in_room(module: str, room: str) -> bool:
    return module == room or module.startswith(room + ".")


def is_pure(module: str) -> bool:
    return any(in_room(module, p) for p in PURE)


@pytest.mark.parametrize("name", sorted(m for m in MODULES if is_pure(m)))
def test_pure_modules_import_only_pure_modules(name):
    for imported in imports(name):
        top = imported.split(".")[0]
        assert top not in IMPURE_LIBRARIES, f"{name} is pure but imports {imported}"
        if top == "toolshare" and imported != "toolshare":
            assert is_pure(imported), f"{name} is pure but imports {imported}, which is not"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if not any(in_room(m, r) for r in NOT_PRODUCT)))
def test_the_product_never_imports_the_local_environment_or_the_cli(name):
    for imported in imports(name):
        assert not any(in_room(imported, r) for r in NOT_PRODUCT), f"{name} imports {imported}"


@pytest.mark.parametrize("room", ISOLATED)
def test_controller_admission_and_gate_never_import_each_other(room):
    for name in (m for m in MODULES if in_room(m, room)):
        for imported in imports(name):
            others = [r for r in ISOLATED if r != room and in_room(imported, r)]
            assert not others, f"{name} ({room}) imports {imported}"


def test_the_rule_sees_every_kind_of_import():
    """The checker itself: lazy, relative and `from package import module` imports all count."""
    assert "toolshare.local.controlplane.binaries" in imports("toolshare.cli.main")  # lazy, inside a function
    assert "toolshare.admission.webhooks" in imports("toolshare.manager")  # from package import module
    assert is_pure("toolshare.render.ingress") and not is_pure("toolshare.state.views")
