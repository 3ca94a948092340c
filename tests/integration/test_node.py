"""On the wire, on the real node: the tool runs, its status says so, and NetworkPolicy is enforced.

Each check is made by a real Pod that opens a TCP connection (bash's /dev/tcp) and exits with the
answer, read from its terminated state: nothing here is inferred from the objects alone.
"""

from __future__ import annotations

import kubernetes
import kubernetes.stream
import pytest

from tests.support import rbac
from tests.support.objects import Toolshare, toolrun
from tests.support.wait import wait_for
from toolshare.local.images import catalog
from toolshare.model import service_name
from toolshare.render.pod import CONTAINER_SECURITY, POD_SECURITY
from toolshare.settings import Settings

INGRESS_NAMESPACE = Settings().ingress_namespace  # the operator's default: the router's namespace
START = 180.0  # a cold JupyterLab start on a loaded 2-core machine


def _node_ready(core: kubernetes.client.CoreV1Api) -> bool:
    for node in core.list_node().items:
        if any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or []):
            return True
    return False


@pytest.fixture(scope="module")
def core(cluster) -> kubernetes.client.CoreV1Api:
    core = kubernetes.client.CoreV1Api(cluster.client())
    assert _node_ready(core), "these tests need a Ready node: `toolshare cluster up` starts one, or run on kind/k3d"
    return core


def _ensure_namespace(core, name: str) -> None:
    """The router's namespace: shared by every test that needs it, so not a test namespace (those
    are deleted after their test, and some tests wait for all of them to be gone)."""
    try:
        core.create_namespace({"metadata": {"name": name}})
    except kubernetes.client.ApiException as e:
        if e.status != 409:
            raise


def _condition(obj: dict, type_: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def _probe(core, namespace: str, name: str, ip: str, port: int) -> int:
    """Exit code of a Pod in `namespace` that connects to ip:port (0: connected), read from its
    terminated state once it has ended."""
    script = f"timeout 5 bash -c '</dev/tcp/{ip}/{port}'"
    core.create_namespaced_pod(namespace, {
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                 # restricted, like every Pod in a namespace that enforces it
                 "securityContext": POD_SECURITY,
                 "containers": [{"name": "probe", "image": catalog.DEBIAN, "imagePullPolicy": "Never",
                                 "securityContext": CONTAINER_SECURITY, "command": ["bash", "-c", script]}]}})

    def ended():
        pod = core.read_namespaced_pod(name, namespace)
        for cs in pod.status.container_statuses or []:
            if cs.state.terminated is not None:
                return cs.state.terminated
        return None

    terminated = wait_for(ended, timeout=START, what=f"probe {namespace}/{name} -> {ip}:{port} to end")
    core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    return terminated.exit_code


RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}


def test_a_tool_runs_on_the_node_and_only_its_http_port_is_open_to_the_router(cluster, core, operator, namespace):
    """The sample JupyterLab tool (HTTP and SSH) in a namespace that enforces the "restricted" Pod
    Security Standard: its Pod is admitted as rendered, runs as uid 1000 with sshd binding 22."""
    core.patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})
    ts = Toolshare(cluster.client(), namespace)
    run = toolrun("nb", endpoints=[{"name": "lab", "port": 8888, "protocol": "http"},
                                   {"name": "ssh", "port": 22, "protocol": "ssh"}])
    run["spec"]["image"] = catalog.JUPYTERLAB
    ts.create(run)

    ready = wait_for(lambda: (lambda r: r if _condition(r, "ToolReady").get("status") == "True" else None)(
        ts.get("toolruns", "nb")), timeout=START, what="ToolReady=True")
    assert _condition(ready, "ToolReady")["reason"] == "Running"
    assert ready["status"]["podPhase"] == "Running"
    pod = core.read_namespaced_pod(service_name("nb"), namespace)
    ip = pod.status.pod_ip
    assert ip and ip.startswith("10.244."), ip

    # sshd listens in the tool (so a refused probe below is the policy, not a closed port); asked
    # through the kubelet's exec, from inside the Pod.
    def banner():
        said = kubernetes.stream.stream(
            core.connect_get_namespaced_pod_exec, pod.metadata.name, namespace, container=pod.spec.containers[0].name,
            command=["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/22 && head -c 7 <&3"],
            stderr=True, stdin=False, stdout=True, tty=False)
        return said if said.startswith("SSH-2.0") else None
    wait_for(banner, timeout=60, interval=1, what="sshd in the tool to listen on 22")
    uids = kubernetes.stream.stream(
        core.connect_get_namespaced_pod_exec, pod.metadata.name, namespace, container=pod.spec.containers[0].name,
        command=["bash", "-c", "cat /proc/[0-9]*/status | awk '/^Uid:/ {print $2}' | sort -u"], stderr=True, stdin=False, stdout=True, tty=False)
    assert uids.split() == ["1000"], uids  # sshd, JupyterLab, this shell: nothing as root

    _ensure_namespace(core, INGRESS_NAMESPACE)
    assert _probe(core, INGRESS_NAMESPACE, f"http-{namespace}"[:63], ip, 8888) == 0
    assert _probe(core, INGRESS_NAMESPACE, f"ssh-{namespace}"[:63], ip, 22) != 0
    assert _probe(core, namespace, "http-from-elsewhere", ip, 8888) != 0
    assert _probe(core, namespace, "ssh-from-elsewhere", ip, 22) != 0



# Through JupyterLab's own contents API, from inside the tool's container: what a person's browser
# does when they save a notebook (the page's _xsrf cookie sent back as X-XSRFToken).
SAVE_NOTEBOOK = """
import http.cookiejar, json, urllib.request
jar = http.cookiejar.CookieJar()
lab = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
lab.open("http://127.0.0.1:8888/lab").read()
xsrf = next(c.value for c in jar if c.name == "_xsrf")
notebook = {"type": "notebook", "format": "json", "content": {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
            "cells": [{"cell_type": "markdown", "metadata": {}, "source": "kept across Pods"}]}}
saved = lab.open(urllib.request.Request("http://127.0.0.1:8888/api/contents/analysis.ipynb", method="PUT",
                 data=json.dumps(notebook).encode(), headers={"Content-Type": "application/json", "X-XSRFToken": xsrf}))
print(saved.status)
"""
READ_NOTEBOOK = """
import json, urllib.request
got = json.load(urllib.request.urlopen("http://127.0.0.1:8888/api/contents/analysis.ipynb"))
print(got["content"]["cells"][0]["source"])
"""


def _python(core, namespace: str, pod: str, script: str) -> str:
    return kubernetes.stream.stream(core.connect_get_namespaced_pod_exec, pod, namespace, container="tool",
                                    command=["python3", "-c", script], stderr=True, stdin=False, stdout=True,
                                    tty=False).strip()


def _ready_pod(ts, core, namespace: str, run: str, not_uid: str = "") -> kubernetes.client.V1Pod:
    """The run's Pod once ToolReady is True on a Pod other than `not_uid`."""
    def ready():
        if _condition(ts.get("toolruns", run) or {}, "ToolReady").get("status") != "True":
            return None
        try:
            pod = core.read_namespaced_pod(service_name(run), namespace)
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                return None
            raise
        ready_now = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        return pod if ready_now and pod.metadata.uid != not_uid else None
    return wait_for(ready, timeout=START, what=f"{run} ToolReady on a new Pod")


def test_a_home_on_a_claim_keeps_its_notebooks_across_pods_and_runs_of_the_same_name(cluster, core, operator,
                                                                                      namespace):
    """JupyterLab with its home on alice's PersistentVolumeClaim (the cluster's default storage
    class: the local node's volumes here), in a restricted namespace: a notebook saved through
    JupyterLab is there after the Pod is deleted, and after the run is deleted and launched again."""
    core.patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})
    rbac.bind_edit(cluster, namespace, users=["alice"])
    alice = Toolshare(cluster.client("alice"), namespace)
    alice.core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": "alice-home"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    run = toolrun("nb", endpoints=[{"name": "lab", "port": 8888, "protocol": "http"}])
    run["spec"]["image"] = catalog.JUPYTERLAB
    run["spec"]["template"] = {"volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "alice-home"}}],
                               "volumeMounts": [{"name": "home", "mountPath": "/home/jovyan"}]}
    alice.create(run)
    pod = _ready_pod(alice, core, namespace, "nb")
    assert _python(core, namespace, pod.metadata.name, SAVE_NOTEBOOK) == "201"

    core.delete_namespaced_pod(pod.metadata.name, namespace)
    pod = _ready_pod(alice, core, namespace, "nb", not_uid=pod.metadata.uid)
    assert _python(core, namespace, pod.metadata.name, READ_NOTEBOOK) == "kept across Pods"

    alice.delete("toolruns", "nb")
    wait_for(lambda: alice.get("toolruns", "nb") is None and not core.list_namespaced_pod(namespace).items,
             timeout=START, what="nb and its Pod gone")
    alice.create(run)
    pod = _ready_pod(alice, core, namespace, "nb", not_uid=pod.metadata.uid)
    assert _python(core, namespace, pod.metadata.name, READ_NOTEBOOK) == "kept across Pods"

def test_a_missing_image_and_a_crashing_tool_say_so(cluster, core, operator, namespace):
    ts = Toolshare(cluster.client(), namespace)
    missing = toolrun("missing", endpoints=[{"name": "lab", "port": 8888, "protocol": "http"}])
    missing["spec"]["image"] = "toolshare.local/no-such-tool:1"
    ts.create(missing)
    crashing = toolrun("crashing", endpoints=[{"name": "lab", "port": 8888, "protocol": "http"}])
    crashing["spec"].update(image=catalog.DEBIAN, command=["bash", "-c", "echo config is broken >&2; exit 3"])
    ts.create(crashing)

    pulled = wait_for(lambda: _condition(ts.get("toolruns", "missing") or {}, "ToolReady").get("reason")
                      == "ImagePullBackOff" and ts.get("toolruns", "missing"), timeout=START,
                      what="ToolReady=ImagePullBackOff")
    tool = _condition(pulled, "ToolReady")
    assert tool["status"] == "False" and "toolshare.local/no-such-tool:1" in tool["message"]
    crashed = wait_for(lambda: _condition(ts.get("toolruns", "crashing") or {}, "ToolReady").get("reason")
                       == "CrashLoopBackOff" and ts.get("toolruns", "crashing"), timeout=START,
                       what="ToolReady=CrashLoopBackOff")
    assert "exited with code 3" in _condition(crashed, "ToolReady")["message"]



def test_a_pod_that_cannot_start_says_why_scheduling_volume_or_secret(cluster, core, operator, namespace):
    """ToolReady names what keeps the Pod from starting: a GPU the node does not have, a claim
    that does not exist, a Secret that does not exist (the kubelet's CreateContainerConfigError)."""
    ts = Toolshare(cluster.client(), namespace)
    sleeper = {"image": catalog.DEBIAN, "command": ["sleep", "infinity"]}
    gpu = toolrun("gpu", endpoints=[{"name": "lab", "port": 8888, "protocol": "http"}])
    gpu["spec"].update(sleeper, resources={"limits": {"nvidia.com/gpu": 1}})
    claim = toolrun("claim", endpoints=[{"name": "lab", "port": 8888, "protocol": "http"}])
    claim["spec"].update(sleeper, template={
        "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "no-such-claim"}}],
        "volumeMounts": [{"name": "home", "mountPath": "/home/tool"}]})
    secret = toolrun("secret", endpoints=[{"name": "lab", "port": 8888, "protocol": "http"}])
    secret["spec"].update(sleeper, env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "no-such-secret",
                                                                                          "key": "token"}}}])
    for run in (gpu, claim, secret):
        ts.create(run)

    def said(run: str, reason: str, text: str):
        cond = _condition(ts.get("toolruns", run) or {}, "ToolReady")
        return cond if cond.get("reason") == reason and text in cond.get("message", "") else None
    assert wait_for(lambda: said("gpu", "Unschedulable", "Insufficient nvidia.com/gpu"), timeout=START,
                    what="gpu: ToolReady=Unschedulable naming the GPU")["status"] == "False"
    assert wait_for(lambda: said("claim", "Unschedulable", '"no-such-claim" not found'), timeout=START,
                    what="claim: ToolReady=Unschedulable naming the claim")["status"] == "False"
    assert wait_for(lambda: said("secret", "CreateContainerConfigError", '"no-such-secret" not found'),
                    timeout=START, what="secret: ToolReady=CreateContainerConfigError naming the Secret")

def test_a_second_node_on_the_machine_is_refused_and_starts_nothing(cluster, tmp_path):
    from toolshare.local.controlplane import cluster as controlplane

    if cluster.local_dir is None:
        pytest.skip("the suite runs against an external cluster (TOOLSHARE_KUBECONFIG): no local node to share")
    second = tmp_path / "second"
    with pytest.raises(controlplane.ClusterError, match="already runs on this machine") as refused:
        controlplane.up(second, node=True)
    assert str(cluster.local_dir) in str(refused.value)
    assert not (second / "state.json").exists()  # nothing was started
