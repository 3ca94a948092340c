"""spec.template: what is refused, what its writer must be allowed to use, and the Pod it renders."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from toolshare import podtemplate, render
from toolshare.policy import Policy, PolicyError
from toolshare.podtemplate import added_references, Reference, host_path_allowed, references, template_problems

CORPUS = yaml.safe_load((Path(__file__).parents[1] / "data" / "hostile_templates.yaml").read_text())
CRD = (Path(__file__).parents[2] / "crds" / "toolruns.toolshare.dev.yaml").read_text()


def run(**spec) -> dict:
    return {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun",
            "metadata": {"name": "nb", "namespace": "lab", "uid": "u1"},
            "spec": {"owner": "alice", "image": "toolshare.local/jupyterlab:4.6.6",
                     "endpoints": [{"name": "lab", "port": 8888, "protocol": "http"},
                                   {"name": "ssh", "port": 22, "protocol": "ssh"}], **spec}}


@pytest.mark.parametrize("entry", CORPUS, ids=[e["id"] for e in CORPUS])
def test_each_hostile_template_has_its_rule(entry):
    # The message the test against the API server expects is one the CRD or the webhook says...
    if entry["status"] == 422:
        assert entry["message"] in " ".join(CRD.split()), entry["id"]
    # ...and what the operator can tell by itself, it refuses too (a CRD older than the operator).
    if entry.get("operator"):
        problems = template_problems(run(**copy.deepcopy(entry["spec"])))
        assert problems, entry["id"]
        if entry["status"] == 403:
            assert any(entry["message"] in p for p in problems), problems


def test_a_plain_template_is_fine_and_an_allowed_host_path_too():
    fine = run(template={
        "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "alice-home"}},
                    {"name": "data", "hostPath": {"path": "/srv/datasets/genomics"}}],
        "volumeMounts": [{"name": "home", "mountPath": "/home/jovyan"}, {"name": "data", "mountPath": "/data"}],
        "containerSecurityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}},
        "initContainers": [{"name": "setup", "image": "debian", "volumeMounts": [{"name": "home", "mountPath": "/h"}]}]})
    assert template_problems(fine, allowed_host_paths=("/srv/datasets",)) == []
    assert template_problems(fine) != []  # no hostPath is allowed unless the administrator says so


@pytest.mark.parametrize("path, allowed", [
    ("/srv/datasets", True), ("/srv/datasets/a/b", True), ("/srv/datasets/", True),
    ("/srv/datasets-other", False), ("/srv", False), ("/srv/datasets/../../etc", False), ("relative", False),
    ("/", False), (None, False)])
def test_host_paths_match_whole_components_and_never_climb(path, allowed):
    assert host_path_allowed(path, ("/srv/datasets",)) is allowed


def test_the_policy_reads_allowed_host_paths_and_refuses_bad_ones():
    assert Policy.from_env({"TOOLSHARE_ALLOWED_HOST_PATHS": "/srv/datasets, /mnt/shared"}).allowed_host_paths == (
        "/srv/datasets", "/mnt/shared")
    with pytest.raises(PolicyError, match="TOOLSHARE_ALLOWED_HOST_PATHS: 'srv' must be an absolute path"):
        Policy.from_env({"TOOLSHARE_ALLOWED_HOST_PATHS": "srv"})


def test_every_object_the_pod_would_use_is_a_reference_its_writer_is_asked_about():
    r = run(env=[{"name": "A", "value": "1"}, {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
                 {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "mode"}}}],
            template={"volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "alice-home"}},
                                  {"name": "certs", "secret": {"secretName": "tls"}},
                                  {"name": "conf", "configMap": {"name": "settings"}}, {"name": "tmp", "emptyDir": {}}],
                      "imagePullSecrets": [{"name": "pull"}], "serviceAccountName": "runner",
                      "initContainers": [{"name": "setup", "image": "debian",
                                          "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "key", "key": "k"}}}]}]})
    assert references(r) == [
        Reference("spec.env[1].valueFrom.secretKeyRef", "secrets", "db"),
        Reference("spec.env[2].valueFrom.configMapKeyRef", "configmaps", "conf"),
        Reference("spec.template.volumes[0].persistentVolumeClaim.claimName", "persistentvolumeclaims", "alice-home"),
        Reference("spec.template.volumes[1].secret.secretName", "secrets", "tls"),
        Reference("spec.template.volumes[2].configMap.name", "configmaps", "settings"),
        Reference("spec.template.imagePullSecrets[0].name", "secrets", "pull"),
        Reference("spec.template.initContainers[0].env[0].valueFrom.secretKeyRef", "secrets", "key"),
        Reference("spec.template.serviceAccountName", "serviceaccounts", "runner", "create", "token"),
    ]
    assert references(run()) == []
    # The namespace's default account is every Pod's anyway: nothing to ask.
    assert references(run(template={"serviceAccountName": "default"})) == []



def test_an_update_is_asked_about_only_what_it_adds():
    old = run(template={"volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "alice-home"}}]})
    # The operator's finalizer patch, a label edit: nothing new to ask about.
    assert added_references(old, old) == []
    moved = run(template={"volumes": [{"name": "h", "persistentVolumeClaim": {"claimName": "alice-home"}},
                                      {"name": "s", "secret": {"secretName": "tls"}}]})
    assert added_references(moved, old) == [Reference("spec.template.volumes[1].secret.secretName", "secrets", "tls")]
    assert added_references(old, None) == references(old)

def test_the_template_renders_into_the_pod_over_the_restricted_defaults():
    r = run(env=[{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw", "optional": True}}}],
            resources={"limits": {"nvidia.com/gpu": 1, "memory": "8Gi"}},
            template={
                "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "alice-home"}},
                            {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}],
                "volumeMounts": [{"name": "home", "mountPath": "/home/jovyan"},
                                 {"name": "scratch", "mountPath": "/scratch", "readOnly": False}],
                "nodeSelector": {"gpu": "a100"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
                "serviceAccountName": "runner", "automountServiceAccountToken": True,
                "securityContext": {"runAsUser": 1001, "fsGroup": 100},
                "containerSecurityContext": {"readOnlyRootFilesystem": True, "capabilities": {"add": ["NET_BIND_SERVICE"]}},
                "imagePullSecrets": [{"name": "pull"}],
                "initContainers": [{"name": "fetch", "image": "debian", "command": ["sh", "-c", "true"],
                                    "volumeMounts": [{"name": "home", "mountPath": "/home/jovyan"}]}]})
    spec = render.render_pod(r)["spec"]
    tool = spec["containers"][0]
    assert tool["env"] == [{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw", "optional": True}}}]
    assert tool["resources"] == {"limits": {"nvidia.com/gpu": 1, "memory": "8Gi"}}
    assert tool["volumeMounts"] == [{"name": "home", "mountPath": "/home/jovyan"},
                                    {"name": "scratch", "mountPath": "/scratch", "readOnly": False}]
    assert tool["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                       "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}
    assert spec["volumes"] == r["spec"]["template"]["volumes"]
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1001, "runAsGroup": 1000, "fsGroup": 100,
                                       "seccompProfile": {"type": "RuntimeDefault"},
                                       "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "22"}]}
    assert (spec["serviceAccountName"], spec["automountServiceAccountToken"]) == ("runner", True)
    for field in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets"):
        assert spec[field] == r["spec"]["template"][field]
    (init,) = spec["initContainers"]
    assert init == {"name": "fetch", "image": "debian", "command": ["sh", "-c", "true"],
                    "volumeMounts": [{"name": "home", "mountPath": "/home/jovyan"}],
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}
    assert "ports" not in init  # nothing but the tool (and the guard) listens


def test_without_a_template_the_pod_mounts_no_token_and_names_no_account():
    spec = render.render_pod(run())["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert not {"serviceAccountName", "volumes", "initContainers", "nodeSelector"} & set(spec)


def test_fields_the_renderer_does_not_know_are_not_copied():
    # The schema prunes unknown fields; should one get through (an old CRD), it goes no further.
    r = run(template={"volumes": [{"name": "x", "emptyDir": {}, "nfs": {"server": "evil", "path": "/"}}],
                      "securityContext": {"runAsUser": 5, "sysctls": [{"name": "kernel.core_pattern", "value": "|/x"}]},
                      "containerSecurityContext": {"privileged": True, "procMount": "Unmasked"}})
    spec = render.render_pod(r)["spec"]
    assert spec["volumes"] == [{"name": "x", "emptyDir": {}}]
    assert all(s["name"] == "net.ipv4.ip_unprivileged_port_start" for s in spec["securityContext"]["sysctls"])
    assert not {"privileged", "procMount"} & set(spec["containers"][0]["securityContext"])
    assert template_problems(r)  # and the operator refuses the run anyway (privileged)


def test_the_constants_match_the_crd():
    assert all(c in CRD for c in podtemplate.BASELINE_CAPABILITIES)
