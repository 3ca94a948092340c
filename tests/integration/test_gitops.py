"""The GitOps examples on the real API server with the session operator: the tenant repository
applied twice (server-side, as alice) changes nothing, and Argo CD's Lua health checks
(examples/gitops/argocd/health/) read the live objects the operator has written status on."""

from __future__ import annotations

import copy
import datetime as dt
import subprocess
from pathlib import Path

import lupa
import pytest
import yaml

from tests.support.expected import converged
from tests.support.objects import Toolshare, runshare, toolrun
from tests.support.rbac import bind_edit
from tests.support.wait import wait_for
from toolshare.local.controlplane.binaries import ensure_binaries
from toolshare.local.dev import repo_root

GITOPS = repo_root() / "examples" / "gitops"
TENANT = GITOPS / "tenants" / "team-a"
SCRIPT = GITOPS / "argocd" / "health" / "toolshare.lua"


def health(obj: dict) -> dict:
    """Run the health script as Argo CD does: `obj` global, the script returns a table."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT.read_text())
    return dict(result)


def tenant_manifests(namespace: str) -> str:
    order = yaml.safe_load((TENANT / "kustomization.yaml").read_text())["resources"]
    docs = [d for name in order for d in yaml.safe_load_all((TENANT / name).read_text()) if d]
    for d in docs:
        d["metadata"]["namespace"] = namespace
    return yaml.safe_dump_all(docs)


def apply_as(cluster, user: str, text: str) -> str:
    kubectl = ensure_binaries().path("kubectl")
    proc = subprocess.run([str(kubectl), "apply", "--server-side", "--field-manager=argocd-controller", "-f", "-"],
                          input=text, capture_output=True, text=True, env=cluster.env(user), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def snapshot(ts: Toolshare) -> dict:
    """What an apply can change of each object: its metadata and spec, and every field manager's
    entry but the status subresource's (an apply that writes anything updates its entry's time)."""
    out = {}
    for plural in ("toolruns", "runshares"):
        for o in ts.api.list_namespaced_custom_object("toolshare.dev", "v1alpha1", ts.ns, plural)["items"]:
            m = o["metadata"]
            kept = {k: v for k, v in m.items() if k not in ("resourceVersion", "managedFields")}
            kept["managedFields"] = [f for f in m["managedFields"] if f.get("subresource") != "status"]
            out[(plural, m["name"])] = {"metadata": kept, "spec": o["spec"], "fields": m["managedFields"]}
    return out


def ready(ts: Toolshare, plural: str, name: str):
    c = ts.condition(plural, name)
    return c if c and c["status"] == "True" else None


def test_tenant_repository_applied_twice_changes_nothing(cluster, operator, namespace):
    bind_edit(cluster, namespace, users=["alice"])
    alice = Toolshare(cluster.client("alice"), namespace)
    text = tenant_manifests(namespace)
    apply_as(cluster, "alice", text)
    for plural, name in (("toolruns", "alice-notebook"), ("toolruns", "alice-rstudio"),
                         ("runshares", "notebook-for-bob"), ("runshares", "genomics-for-lab")):
        wait_for(lambda: ready(alice, plural, name), timeout=60, what=f"{plural}/{name} Ready")
    # Ready is not settled: a run is Ready before a share is processed, and the share's status is
    # written before its runs' (sharedWith). Only once every status is what the renderer says is the
    # operator done writing.
    converged(cluster.client(), namespace)
    assert alice.annotations("alice-notebook")["lab"]["toolshare.dev/allowed-users"] == "bob"
    before = snapshot(alice)
    out = apply_as(cluster, "alice", text)
    assert out.count("serverside-applied") == 4
    after = snapshot(alice)
    # Not the resourceVersion: these images cannot be pulled here (and take minutes to pull where
    # they can), so the kubelet keeps moving each run's Pod through its pull cycle and the operator
    # mirrors that into status.conditions[ToolReady] whenever it likes. Those are the node's writes,
    # not the apply's, and only the status subresource.
    changed = {k: [part for part in ("metadata", "spec") if before[k][part] != after[k][part]] for k in before}
    assert not any(changed.values()), f"a second apply changed {changed}"
    # The operator owns only status; every spec field is the applier's.
    for (plural, name), seen in after.items():
        for f in seen["fields"]:
            if f["manager"] != "argocd-controller":
                assert f.get("subresource") == "status", (plural, name, f["manager"], f["fieldsV1"])


def test_argocd_health_of_live_objects(cluster, operator, namespace):
    bind_edit(cluster, namespace, users=["alice"])
    alice = Toolshare(cluster.client("alice"), namespace)
    alice.create(toolrun("nb", friendly=f"nb-{namespace}"))
    wait_for(lambda: ready(alice, "toolruns", "nb"), timeout=60, what="nb Ready")
    alice.create(toolrun("second", friendly=f"nb-{namespace}"))  # nb's host: refused
    alice.create(runshare("to-bob", run="nb", users=["bob"]))
    alice.create(runshare("to-nobody", run="ghost", users=["bob"]))
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    alice.create(runshare("brief", run="nb", users=["bob"], expires_at=soon))
    image = {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ImageShare", "metadata": {"name": "img"},
             "spec": {"image": f"registry.example.org/{namespace}/nb", "groups": ["lab"]}}
    alice.create(image)

    def reason(plural, name):
        return (alice.condition(plural, name) or {}).get("reason")

    wait_for(lambda: reason("toolruns", "second") == "FriendlyNameConflict", timeout=60, what="second refused")
    wait_for(lambda: reason("runshares", "to-bob") == "Active", timeout=60, what="to-bob Active")
    wait_for(lambda: reason("runshares", "to-nobody") == "RunNotFound", timeout=60, what="to-nobody RunNotFound")
    wait_for(lambda: reason("runshares", "brief") == "Expired", timeout=60, what="brief Expired")
    wait_for(lambda: ready(alice, "imageshares", "img"), timeout=60, what="img Claimed")

    cases = {("toolruns", "nb"): "Healthy", ("toolruns", "second"): "Degraded",
             ("runshares", "to-bob"): "Healthy", ("runshares", "to-nobody"): "Degraded",
             ("runshares", "brief"): "Suspended", ("imageshares", "img"): "Healthy"}
    live = {k: alice.get(*k) for k in cases}
    got = {k: health(o)["status"] for k, o in live.items()}
    assert got == cases
    assert health(live[("toolruns", "second")])["message"].startswith("FriendlyNameConflict: ")

    # A spec change the operator has not seen yet, and an object it has never touched: Progressing.
    # RunShares record no observedGeneration (a share's status is written only when its verdict
    # changes), so their health stays their last verdict.
    for k, obj in live.items():
        newer = copy.deepcopy(obj)
        newer["metadata"]["generation"] += 1
        assert health(newer) == (health(obj) if obj["kind"] == "RunShare" else
                                 {"status": "Progressing", "message": f"Waiting for the operator to see generation "
                                                                       f"{newer['metadata']['generation']}"}), k
        fresh = {key: v for key, v in obj.items() if key != "status"}
        assert health(fresh) == {"status": "Progressing", "message": "Waiting for the Toolshare operator"}
    # An image another owner claimed first (admission refuses that, so only a race leaves it): Degraded.
    lost = copy.deepcopy(live[("imageshares", "img")])
    lost["status"]["conditions"][0].update(status="False", reason="ClaimedByOther")
    assert health(lost)["status"] == "Degraded"


def test_argocd_maps_every_kind_to_the_script():
    files = yaml.safe_load((GITOPS / "argocd" / "kustomization.yaml").read_text())["configMapGenerator"][0]["files"]
    assert sorted(files) == sorted(f"resource.customizations.health.toolshare.dev_{k}=health/toolshare.lua"
                                   for k in ("ToolRun", "RunShare", "ImageShare"))


@pytest.mark.parametrize("path", sorted(p.relative_to(GITOPS) for p in GITOPS.rglob("*.yaml")))
def test_examples_are_valid_yaml_with_kinds(path: Path):
    docs = [d for d in yaml.safe_load_all((GITOPS / path).read_text()) if d]
    assert docs and all("kind" in d and "apiVersion" in d for d in docs)
