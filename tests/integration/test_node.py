"""On the wire, on the real node: the tool runs, its status says so, and NetworkPolicy is enforced.

Each check is made by a real Pod that opens a TCP connection (bash's /dev/tcp) and exits with the
answer, read from its terminated state: nothing here is inferred from the objects alone.
"""

from __future__ import annotations

import kubernetes
import kubernetes.stream
import pytest

from tests.support.objects import Toolshare, toolrun
from tests.support.wait import wait_for
from toolshare.local.images import catalog
from toolshare.model import service_name
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
                 "containers": [{"name": "probe", "image": catalog.DEBIAN, "imagePullPolicy": "Never",
                                 "command": ["bash", "-c", script]}]}})

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


def test_a_second_node_on_the_machine_is_refused_and_starts_nothing(cluster, tmp_path):
    from toolshare.local.controlplane import cluster as controlplane

    if cluster.local_dir is None:
        pytest.skip("the suite runs against an external cluster (TOOLSHARE_KUBECONFIG): no local node to share")
    second = tmp_path / "second"
    with pytest.raises(controlplane.ClusterError, match="already runs on this machine") as refused:
        controlplane.up(second, node=True)
    assert str(cluster.local_dir) in str(refused.value)
    assert not (second / "state.json").exists()  # nothing was started
