"""The control plane under the tests is a real one: CEL, RBAC, garbage collection, authentication."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import kubernetes
import pytest

from tests.support.wait import wait_for

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.cel.test.toolshare.dev"},
    "spec": {
        "group": "cel.test.toolshare.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {
                    "type": "object",
                    "properties": {"replicas": {"type": "integer"}},
                    "x-kubernetes-validations": [
                        {"rule": "self.replicas <= 5", "message": "replicas must be at most 5"}
                    ],
                }},
            }},
        }],
    },
}


def test_cel_rule_rejects_bad_object_with_its_message(cluster, namespace):
    ext = kubernetes.client.ApiextensionsV1Api(cluster.client())
    try:
        ext.create_custom_resource_definition(WIDGET_CRD)
    except kubernetes.client.ApiException as e:
        if e.status != 409:
            raise
    objects = kubernetes.client.CustomObjectsApi(cluster.client())

    def established():
        crd = ext.read_custom_resource_definition(WIDGET_CRD["metadata"]["name"])
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    wait_for(established, what="CRD Established")
    good = {"apiVersion": "cel.test.toolshare.dev/v1", "kind": "Widget", "metadata": {"name": "ok"}, "spec": {"replicas": 3}}
    bad = {**good, "metadata": {"name": "bad"}, "spec": {"replicas": 9}}
    # The discovery of a just-established CRD can lag a moment; retry 404s only.
    wait_for(lambda: _create_or_404(objects, namespace, good), what="Widget served")
    with pytest.raises(kubernetes.client.ApiException) as err:
        objects.create_namespaced_custom_object("cel.test.toolshare.dev", "v1", namespace, "widgets", bad)
    assert err.value.status == 422
    assert "replicas must be at most 5" in err.value.body


def _create_or_404(objects, namespace, body):
    try:
        objects.create_namespaced_custom_object("cel.test.toolshare.dev", "v1", namespace, "widgets", body)
        return True
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return False
        raise


def test_rbac_refuses_carol_and_admits_admin(cluster, namespace):
    cm = {"metadata": {"name": "probe"}, "data": {"a": "b"}}
    with pytest.raises(kubernetes.client.ApiException) as err:
        kubernetes.client.CoreV1Api(cluster.client("carol")).create_namespaced_config_map(namespace, cm)
    assert err.value.status == 403
    assert json.loads(err.value.body)["message"].startswith('configmaps is forbidden: User "carol" cannot create')
    created = kubernetes.client.CoreV1Api(cluster.client()).create_namespaced_config_map(namespace, cm)
    assert created.metadata.name == "probe"


def test_garbage_collector_deletes_orphans(cluster, namespace):
    core = kubernetes.client.CoreV1Api(cluster.client())
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "child", "ownerReferences": [ref]}})
    # A child whose owner never existed (a stale uid) is an orphan from the start.
    dangling = {**ref, "uid": "00000000-0000-0000-0000-000000000000"}
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "dangling", "ownerReferences": [dangling]}})
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    def gone(name):
        try:
            core.read_namespaced_config_map(name, namespace)
            return False
        except kubernetes.client.ApiException as e:
            return e.status == 404

    wait_for(lambda: gone("child"), timeout=60, what="child of a deleted owner to be garbage-collected")
    wait_for(lambda: gone("dangling"), timeout=60, what="dangling child to be garbage-collected")


def test_kubectl_auth_whoami_reports_alice_and_her_groups(cluster):
    from toolshare.local.controlplane.binaries import ensure_binaries

    kubectl = str(ensure_binaries().path("kubectl"))
    out = subprocess.run([kubectl, "--kubeconfig", str(cluster.kubeconfig("alice")), "auth", "whoami", "-o", "json"],
                         capture_output=True, text=True, check=True).stdout
    info = json.loads(out)["status"]["userInfo"]
    assert info["username"] == "alice"
    assert {"lab", "data-science", "system:authenticated"} <= set(info["groups"])


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_cluster_down_leaves_no_process_and_stale_dir_is_recovered():
    from toolshare.local.controlplane import cluster

    directory = Path(tempfile.mkdtemp(prefix="toolshare-lifecycle-"))
    state = cluster.up(directory)
    try:
        pids = dict(state.pids)
        assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager"}
        assert cluster.status(directory)["ready"] is True
        # A killed run leaves a stale directory: `up` recovers it instead of half-using it.
        os.kill(pids["kube-apiserver"], 9)
        wait_for(lambda: not cluster.State.load(directory).running()["kube-apiserver"], what="apiserver dead")
        state = cluster.up(directory)
        assert state.pids["kube-apiserver"] != pids["kube-apiserver"]
        assert cluster.status(directory)["ready"] is True
    finally:
        cluster.down(directory)  # returns once every process it started is gone (or a zombie)
    assert _processes_mentioning(str(directory)) == []
    assert cluster.status(directory)["running"] is False


def test_a_failed_up_stops_what_it_started(tmp_path):
    """An API server that cannot start: `up` raises, and leaves no process behind (its caller, a
    test session's fixture, never gets a state to take down)."""
    from toolshare.local.controlplane import cluster
    from toolshare.local.controlplane.binaries import Binaries, ensure_binaries

    real = ensure_binaries()
    broken = tmp_path / "bin"
    broken.mkdir()
    for name in ("etcd", "kube-controller-manager", "kubectl"):
        (broken / name).symlink_to(real.path(name))
    (broken / "kube-apiserver").write_text("#!/bin/sh\necho 'cannot start' >&2\nexit 3\n")
    (broken / "kube-apiserver").chmod(0o755)
    directory = tmp_path / "cluster"
    with pytest.raises(cluster.ClusterError, match="kube-apiserver exited"):
        cluster.up(directory, Binaries(broken))
    assert _processes_mentioning(str(directory)) == []  # etcd had started
    assert cluster.status(directory)["running"] is False
