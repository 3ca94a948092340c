"""Generate the copies of the one-source files: `python -m toolshare.local.syncmanifests [--check]` (make sync).

crds/ is the only place the CRDs are written by hand; the chart gets them as templates (wrapped in
`crds.enabled`, annotated `helm.sh/resource-policy: keep` when `crds.keep`) and the kustomize base
as plain copies (kustomize loads nothing outside its own directory). The chart reads its RBAC rules
from copies of manifests/rbac and manifests/gate, since Helm reads nothing outside the chart; the
gateway component (manifests/components/gateway) gets a copy of the gateway ClusterRole likewise.
tests/unit/test_generated.py fails when a copy has drifted; --check does the same here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CHART = Path("charts/toolshare")
GATEWAY_COMPONENT = Path("manifests/components/gateway")
REGENERATE = "python -m toolshare.local.syncmanifests  (or: make sync)"
_KEEP = ("  annotations:\n"
         "    {{- if .Values.crds.keep }}\n"
         "    helm.sh/resource-policy: keep\n"
         "    {{- end }}\n")


def _header(source: Path) -> str:
    return f"# GENERATED from {source} by `{REGENERATE}`: edit {source}, not this file.\n"


def chart_crd(source: Path, text: str) -> str:
    if "{{" in text:
        raise ValueError(f"{source} contains '{{{{', which Helm would read as a template")
    head, sep, rest = text.partition("\nmetadata:\n")
    if not sep or "\n  annotations:" in rest.split("\nspec:", 1)[0]:
        raise ValueError(f"{source}: expected a top-level metadata without annotations")
    return (_header(source) + "{{- if .Values.crds.enabled }}\n"
            + head + sep + _KEEP + rest.rstrip("\n") + "\n{{- end }}\n")


def _documents(text: str) -> list[str]:
    return [d.strip("\n") + "\n" for d in text.split("\n---\n") if d.strip()]


def expected(root: Path = ROOT) -> dict[Path, str]:
    """Every generated path (relative to the repository) and the content it must have."""
    out: dict[Path, str] = {}
    crds = sorted((root / "crds").glob("*.yaml"))
    for path in crds:
        source, text = path.relative_to(root), path.read_text()
        out[CHART / "templates" / "crds" / path.name] = chart_crd(source, text)
        out[Path("manifests/crds") / path.name] = _header(source) + text
    out[Path("manifests/crds/kustomization.yaml")] = (
        _header(Path("crds")) + "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources:\n" + "".join(f"  - {p.name}\n" for p in crds))
    files = CHART / "files" / "rbac"
    for source, target in (("manifests/rbac/operator-clusterrole.yaml", "operator-clusterrole.yaml"),
                           ("manifests/gate/clusterrole.yaml", "gate-clusterrole.yaml")):
        out[files / target] = _header(Path(source)) + (root / source).read_text()
    # TOOLSHARE_ROUTING=gateway's extra rules: the chart reads the ClusterRole's rules (rendered only with
    # routing.backend=gateway), the kustomize component (which loads nothing outside its directory)
    # takes the ClusterRole and its binding as they are.
    gateway = Path("manifests/rbac/operator-clusterrole-gateway.yaml")
    gateway_text = (root / gateway).read_text()
    out[files / gateway.name] = _header(gateway) + next(
        d for d in _documents(gateway_text) if "\nkind: ClusterRole\n" in f"\n{d}")
    out[GATEWAY_COMPONENT / gateway.name] = _header(gateway) + gateway_text
    users = Path("manifests/rbac/user-clusterroles.yaml")
    for doc in _documents((root / users).read_text()):
        name = next(line.split(":", 1)[1].strip() for line in doc.splitlines() if line.startswith("  name:"))
        out[files / f"{name}.yaml"] = _header(users) + doc
    return out


def drift(root: Path = ROOT) -> list[str]:
    """Generated paths whose content differs from what the sources say (missing ones included)."""
    return [str(p) for p, text in expected(root).items()
            if not (root / p).is_file() or (root / p).read_text() != text]


def write(root: Path = ROOT) -> list[str]:
    changed = drift(root)
    for path, text in expected(root).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolshare.local.syncmanifests", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report drift (exit 1)")
    args = parser.parse_args(argv)
    if args.check:
        stale = drift()
        for p in stale:
            print(f"out of date: {p}", file=sys.stderr)
        if stale:
            print(f"regenerate with: {REGENERATE}", file=sys.stderr)
        return 1 if stale else 0
    for p in write():
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
