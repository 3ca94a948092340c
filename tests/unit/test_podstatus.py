"""A ToolRun's ToolReady condition, from its Pod (render/podstatus.py, pure).

The fixtures are Pod statuses as the kubelet and the scheduler write them (shapes and messages as
`kubectl get pod -o json` shows them, v1.36), one per state a tool passes through or gets stuck
in; then properties over arbitrary status dicts (never raises, bounded one-line message, the
cache's projection decides the same); then the reconciler's write budget for Pod changes.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt

import kubernetes
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from toolshare import render
from toolshare.client.kube import Kube
from toolshare.controller.reconcile import Reconciler
from toolshare.render.podstatus import MESSAGE_LIMIT, TEXT_LIMIT, clean, project_pod_status, tool_condition
from toolshare.settings import Settings
from toolshare.state.cache import pack, unpack

IMAGE = "toolshare/jupyterlab:dev"
T0 = "2026-11-22T10:00:00Z"


def pod(status: dict, name: str = "nb", **meta) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "lab", "uid": "pod-uid", "resourceVersion": "9", **meta},
            "spec": {"containers": [{"name": "tool", "image": IMAGE}]}, "status": status}


def cond(type_: str, status: str, reason: str | None = None, message: str | None = None) -> dict:
    out = {"type": type_, "status": status, "lastProbeTime": None, "lastTransitionTime": T0}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    return out


def tool(state: dict, ready: bool = False, restarts: int = 0, last: dict | None = None, name: str = "tool",
         image: str = IMAGE) -> dict:
    cs = {"name": name, "image": image, "imageID": "", "ready": ready, "restartCount": restarts,
          "started": "running" in state, "state": state, "lastState": last or {},
          "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets", "readOnly": True}]}
    if "running" in state or "terminated" in state:
        cs.update(containerID="containerd://4f2c", imageID="sha256:8a1f")
    return cs


SCHEDULED = [cond("PodReadyToStartContainers", "True"), cond("Initialized", "True"),
             cond("Ready", "False", "ContainersNotReady", "containers with unready status: [tool]"),
             cond("ContainersReady", "False", "ContainersNotReady", "containers with unready status: [tool]"),
             cond("PodScheduled", "True")]
RUNNING_CONDITIONS = [cond("PodReadyToStartContainers", "True"), cond("Initialized", "True"), cond("Ready", "True"),
                      cond("ContainersReady", "True"), cond("PodScheduled", "True")]
NODE = {"hostIP": "10.0.2.15", "hostIPs": [{"ip": "10.0.2.15"}], "startTime": T0, "qosClass": "BestEffort"}

CRASHED = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": T0, "finishedAt": T0,
                          "containerID": "containerd://4f2c"}}

CASES = {
    # No kubelet, no scheduler (the local cluster before the node): what the API server stores.
    "created": ({"phase": "Pending", "qosClass": "BestEffort"},
                (False, "PodPending", "Pod nb waits to be scheduled to a node")),
    "unschedulable": ({"phase": "Pending", "qosClass": "BestEffort", "conditions": [cond(
        "PodScheduled", "False", "Unschedulable",
        "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }. "
        "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.")]},
        (False, "Unschedulable", "Pod nb cannot be scheduled: 0/1 nodes are available: 1 node(s) had untolerated "
         "taint {node.kubernetes.io/not-ready: }. preemption: 0/1 nodes are available: 1 Preemption is not helpful "
         "for scheduling.")),
    "scheduled, kubelet not yet": ({"phase": "Pending", "qosClass": "BestEffort", "conditions": [cond("PodScheduled", "True")]},
                                   (False, "PodPending", "Pod nb is scheduled and waits for its containers to start")),
    "container creating": ({"phase": "Pending", **NODE, "conditions": SCHEDULED,
                            "containerStatuses": [tool({"waiting": {"reason": "ContainerCreating"}})]},
                           (False, "ContainerCreating", f"container tool (image {IMAGE}) is being created")),
    "image never pulled": ({"phase": "Pending", **NODE, "conditions": SCHEDULED, "containerStatuses": [tool({"waiting": {
        "reason": "ErrImageNeverPull",
        "message": f'Container image "{IMAGE}" is not present with pull policy of Never'}})]},
        (False, "ErrImageNeverPull",
         f'image {IMAGE} of container tool cannot be pulled: Container image "{IMAGE}" is not present with pull '
         'policy of Never')),
    "image pull error": ({"phase": "Pending", **NODE, "conditions": SCHEDULED, "containerStatuses": [tool({"waiting": {
        "reason": "ErrImagePull",
        "message": 'failed to pull and unpack image "docker.io/library/nosuch:1": failed to resolve reference '
                   '"docker.io/library/nosuch:1": pull access denied, repository does not exist or may require '
                   'authorization'}}, image="nosuch:1")]},
        (False, "ImagePullBackOff",
         'image nosuch:1 of container tool cannot be pulled: failed to pull and unpack image '
         '"docker.io/library/nosuch:1": failed to resolve reference "docker.io/library/nosuch:1": pull access '
         'denied, repository does not exist or may require authorization')),
    "image pull back-off": ({"phase": "Pending", **NODE, "conditions": SCHEDULED, "containerStatuses": [tool({"waiting": {
        "reason": "ImagePullBackOff", "message": 'Back-off pulling image "nosuch:1"'}}, image="nosuch:1")]},
        (False, "ImagePullBackOff", 'image nosuch:1 of container tool cannot be pulled')),
    "running, not ready": ({"phase": "Running", **NODE, "conditions": SCHEDULED,
                            "containerStatuses": [tool({"running": {"startedAt": T0}})]},
                           (False, "ContainersNotReady", f"container tool (image {IMAGE}) is running but not ready")),
    "running and ready": ({"phase": "Running", **NODE, "podIP": "10.88.0.7", "conditions": RUNNING_CONDITIONS,
                           "containerStatuses": [tool({"running": {"startedAt": T0}}, ready=True)]},
                          (True, "Running", f"container tool (image {IMAGE}) is running and ready")),
    "crash loop": ({"phase": "Running", **NODE, "conditions": SCHEDULED, "containerStatuses": [tool(
        {"waiting": {"reason": "CrashLoopBackOff",
                     "message": "back-off 40s restarting failed container=tool pod=nb_lab(0a6c1f7e-pod-uid)"}},
        restarts=3, last=CRASHED)]},
        (False, "CrashLoopBackOff",
         f"container tool (image {IMAGE}) exited with code 1 (Error) and is restarting")),
    "crashed, about to restart": ({"phase": "Running", **NODE, "conditions": SCHEDULED,
                                   "containerStatuses": [tool(CRASHED, restarts=1)]},
                                  (False, "CrashLoopBackOff",
                                   f"container tool (image {IMAGE}) exited with code 1 (Error) and is restarting")),
    "out of memory": ({"phase": "Running", **NODE, "conditions": SCHEDULED, "containerStatuses": [tool(
        {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container=tool"}},
        restarts=1, last={"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": T0, "finishedAt": T0}})]},
        (False, "CrashLoopBackOff",
         f"container tool (image {IMAGE}) exited with code 137 (OOMKilled) and is restarting")),
    "exited 0": ({"phase": "Running", **NODE, "conditions": SCHEDULED, "containerStatuses": [tool(
        {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": T0, "finishedAt": T0}})]},
        (False, "Completed", f"container tool (image {IMAGE}) exited with code 0 (Completed)")),
    "bad config": ({"phase": "Pending", **NODE, "conditions": SCHEDULED, "containerStatuses": [tool({"waiting": {
        "reason": "CreateContainerConfigError", "message": 'secret "lab-token" not found'}})]},
        (False, "CreateContainerConfigError",
         f'container tool (image {IMAGE}) cannot start: secret "lab-token" not found')),
    "init container running": ({"phase": "Pending", **NODE, "conditions": [
        cond("Initialized", "False", "ContainersNotInitialized", "containers with incomplete status: [setup]"),
        *SCHEDULED[2:]],
        "initContainerStatuses": [tool({"terminated": {"exitCode": 0, "reason": "Completed"}}, name="fetch", image="busybox"),
                                  tool({"running": {"startedAt": T0}}, name="setup", image="busybox")],
        "containerStatuses": [tool({"waiting": {"reason": "PodInitializing"}})]},
        (False, "PodInitializing",
         "Pod nb is initializing (1/2 init containers done): init container setup (image busybox) is running")),
    "init container crash loop": ({"phase": "Pending", **NODE, "conditions": [
        cond("Initialized", "False", "ContainersNotInitialized", "containers with incomplete status: [setup]"),
        *SCHEDULED[2:]],
        "initContainerStatuses": [tool({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
                                       name="setup", image="busybox", restarts=2,
                                       last={"terminated": {"exitCode": 2, "reason": "Error",
                                                            "message": "setup: /data is not writable\n"}})],
        "containerStatuses": [tool({"waiting": {"reason": "PodInitializing"}})]},
        (False, "Init:CrashLoopBackOff",
         "init container setup (image busybox) exited with code 2 (Error) and is restarting: "
         "setup: /data is not writable")),
    "sidecar injected, tool crashing": ({"phase": "Running", **NODE, "conditions": SCHEDULED, "containerStatuses": [
        tool({"running": {"startedAt": T0}}, ready=True, name="istio-proxy", image="istio/proxyv2:1.24"),
        tool({"waiting": {"reason": "CrashLoopBackOff"}}, restarts=5, last=CRASHED)]},
        (False, "CrashLoopBackOff",
         f"container tool (image {IMAGE}) exited with code 1 (Error) and is restarting")),
    "evicted": ({"phase": "Failed", "reason": "Evicted", "startTime": T0,
                 "message": "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki.",
                 "containerStatuses": [tool({"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown"}})]},
                (False, "Evicted", "Pod nb has failed (Evicted): The node was low on resource: memory. Threshold "
                 "quantity: 100Mi, available: 51200Ki.")),
    "node lost": ({"phase": "Unknown", **NODE},
                  (False, "PodUnknown", "the node of Pod nb does not report its state")),
}


@pytest.mark.parametrize("case", CASES)
def test_each_pod_state_gives_its_condition(case):
    status, expected = CASES[case]
    got = tool_condition(pod(status))
    assert tuple(got) == expected
    # The operator's cache keeps only a projection of the Pod: it decides the same.
    assert tool_condition(unpack(pack(pod(status)))) == got


def test_no_pod():
    assert tuple(tool_condition(None, "nb")) == (False, "PodMissing", "Pod nb does not exist")
    assert tool_condition(None, "nb", "the run's spec is invalid").message == \
        "Pod nb does not exist: the run's spec is invalid"


def test_a_pod_being_deleted_says_so_whatever_its_containers_do():
    status, _ = CASES["running and ready"]
    got = tool_condition(pod(status, deletionTimestamp=T0))
    assert tuple(got) == (False, "PodTerminating", "Pod nb is being deleted")
    assert tool_condition(unpack(pack(pod(status, deletionTimestamp=T0)))) == got


def test_ready_needs_the_pods_own_ready_condition():
    """Containers ready but the Pod not (a readiness gate, or the kubelet has not said so yet)."""
    status = copy.deepcopy(CASES["running and ready"][0])
    status["conditions"] = [cond("Ready", "False", "ReadinessGatesNotReady",
                                 'corresponding condition of pod readiness gate "example.com/feature-1" does not exist.')]
    got = tool_condition(pod(status))
    assert got.ready is False and got.reason == "ContainersNotReady"
    assert got.message.startswith("Pod nb is not ready yet: corresponding condition of pod readiness gate")


def test_a_long_crash_message_is_bounded_and_one_line():
    status = copy.deepcopy(CASES["crash loop"][0])
    status["containerStatuses"][0]["lastState"]["terminated"]["message"] = \
        "Traceback (most recent call last):\n" + "  File \"/opt/tool.py\", line 1\n" * 2000 + "\x1b[31mValueError\x1b[0m"
    got = tool_condition(pod(status))
    assert len(got.message) <= MESSAGE_LIMIT and "\n" not in got.message and "\x1b" not in got.message
    assert got.message.startswith(f"container tool (image {IMAGE}) exited with code 1 (Error) and is restarting"
                                  ": Traceback (most recent call last): File")
    assert got.message.endswith("…")
    assert len(project_pod_status(status)["containerStatuses"][0]["lastState"]["terminated"]["message"]) <= TEXT_LIMIT


def test_a_change_the_condition_does_not_read_changes_nothing():
    """Timestamps, IPs, container ids and the back-off's timer are not in the condition: a Pod
    update that changes only those costs the run no status write."""
    status, _ = CASES["crash loop"]
    later = copy.deepcopy(status)
    later.update(podIP="10.88.0.9", startTime="2026-11-22T11:00:00Z")
    later["containerStatuses"][0]["state"]["waiting"]["message"] = "back-off 1m20s restarting failed container=tool"
    later["containerStatuses"][0]["lastState"]["terminated"].update(finishedAt="2026-11-22T11:00:00Z",
                                                                    containerID="containerd://77")
    assert tool_condition(pod(later)) == tool_condition(pod(status))


def test_clean_is_idempotent_and_bounded():
    for text in ["", "a\tb\n\nc", "x" * 5000, " \x00lead and trail\x7f ", "é" * 600 + " " * 10 + "z"]:
        once = clean(text, 100)
        assert clean(once, 100) == once and len(once) <= 100 and "\n" not in once
    assert clean(42) == "" and clean(None) == ""


# Arbitrary JSON-like values, and Pod-status-shaped dicts whose every field may hold junk instead.
TEXTS = st.sampled_from(["", "tool", "nosuch:1", "a\nb\x1b[0m", "y " * 800, "x" * 70]) | st.text(max_size=30)
REASONS = st.sampled_from(["CrashLoopBackOff", "ErrImagePull", "ErrImageNeverPull", "ContainerCreating",
                           "PodInitializing", "Completed", "Error", "OOMKilled", "Evicted", "Unschedulable",
                           "bad reason!", "R" * 65]) | TEXTS
JUNK = st.recursive(st.none() | st.booleans() | st.integers(-3, 300) | TEXTS,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXTS, inner, max_size=3),
                    max_leaves=10)


def maybe(strategy):
    return strategy | JUNK


def some(**fields):
    return st.fixed_dictionaries({}, optional={k: maybe(v) for k, v in fields.items()})


NUMBERS = st.integers(-1, 300)
TERMINATED = some(reason=REASONS, exitCode=NUMBERS, signal=NUMBERS, message=TEXTS)
CONTAINER = some(name=st.sampled_from(["tool", "sidecar"]) | TEXTS, image=TEXTS, ready=st.booleans(),
                 restartCount=NUMBERS,
                 state=some(waiting=some(reason=REASONS, message=TEXTS), terminated=TERMINATED, running=st.just({})),
                 lastState=some(terminated=TERMINATED))
CONDITION = some(type=st.sampled_from(["PodScheduled", "Initialized", "Ready", "ContainersReady"]),
                 status=st.sampled_from(["True", "False", "Unknown"]), reason=REASONS, message=TEXTS)
STATUS = some(phase=st.sampled_from(["Pending", "Running", "Succeeded", "Failed", "Unknown"]), reason=REASONS,
              message=TEXTS, conditions=st.lists(CONDITION, max_size=4),
              containerStatuses=st.lists(CONTAINER, max_size=3), initContainerStatuses=st.lists(CONTAINER, max_size=2))


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(status=STATUS | JUNK, meta=some(name=TEXTS, deletionTimestamp=st.sampled_from(["", T0])))
def test_any_status_gives_a_bounded_condition_and_the_projection_decides_the_same(status, meta):
    whole = {"metadata": meta, "status": status}
    got = tool_condition(whole, "nb")
    assert isinstance(got.ready, bool) and got.reason and len(got.message) <= MESSAGE_LIMIT
    assert got.message == clean(got.message, MESSAGE_LIMIT)  # one line, no control characters
    assert render.podstatus.clean_reason(got.reason) == got.reason
    kept = {"metadata": meta, "status": project_pod_status(status)}
    assert tool_condition(kept, "nb") == got
    assert project_pod_status(kept["status"]) == kept["status"]  # projecting twice changes nothing


# The reconciler: a Pod change that changes only ToolReady costs exactly one status write.

NOW = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.timezone.utc)
RUN = {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun",
       "metadata": {"name": "nb", "namespace": "lab", "uid": "run-uid", "generation": 1, "resourceVersion": "1"},
       "spec": {"owner": "alice", "image": IMAGE, "endpoints": [{"name": "lab", "port": 8888, "protocol": "http"}]}}


class Recording(Kube):
    """The real client's requests, answered here as the API server would (a higher
    resourceVersion, the status merged), and counted: the reconciler's decisions, with no server."""

    def __init__(self):
        super().__init__(kubernetes.client.ApiClient(kubernetes.client.Configuration()))
        self.sent: list[tuple[str, str, dict]] = []
        self.version = 100
        self.run = copy.deepcopy(RUN)
        self.children: dict[tuple[str, str], dict] = {}

    async def arequest(self, method, path, body=None, query=None, content_type="", kind=""):
        self.sent.append((method, path, copy.deepcopy(body)))
        self.version += 1
        if path.endswith("/status"):
            self.run["status"] = copy.deepcopy(body["status"])
            self.run["metadata"]["resourceVersion"] = str(self.version)
            return copy.deepcopy(self.run)
        served = copy.deepcopy(body)
        served["metadata"].update(uid=f"uid-{served['kind']}", resourceVersion=str(self.version))
        if served["kind"] == "Pod":
            served["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        self.children[(served["kind"], served["metadata"]["name"])] = served
        return copy.deepcopy(served)


def test_each_pod_change_costs_one_status_write_and_only_a_flip_moves_the_transition_time():
    kube = Recording()
    reconciler = Reconciler(kube, Settings())

    def reconcile(children, at):
        kube.sent.clear()
        cached = {key: unpack(pack(child)) for key, child in children.items()}  # as the cache holds them
        asyncio.run(reconciler.reconcile_run(copy.deepcopy(kube.run), [], {"nb": kube.run}, cached, None, at))
        return [(method, path.rsplit("/", 1)[-1]) for method, path, _ in kube.sent]

    def conditions():
        return {c["type"]: c for c in kube.run["status"]["conditions"]}

    first = reconcile({}, NOW)  # creates the children, then one status write
    assert first.count(("PATCH", "status")) == 1 and len(first) == 5
    children = copy.deepcopy(kube.children)
    born = conditions()
    assert born["Ready"]["reason"] == "Reconciled" and born["ToolReady"]["reason"] == "PodPending"
    assert kube.run["status"]["podPhase"] == "Pending"
    assert reconcile(children, NOW + dt.timedelta(seconds=1)) == []  # nothing changed: nothing written

    at = NOW
    for step, (case, reason, ready) in enumerate([("container creating", "ContainerCreating", False),
                                                  ("running and ready", "Running", True),
                                                  ("crash loop", "CrashLoopBackOff", False)]):
        at += dt.timedelta(minutes=1)
        children[("Pod", "nb")] = pod(CASES[case][0]) | {"metadata": {
            **children[("Pod", "nb")]["metadata"], "resourceVersion": str(200 + 10 * step)}}
        before = conditions()
        assert reconcile(children, at) == [("PATCH", "status")], case
        now_ = conditions()
        assert (now_["ToolReady"]["reason"], now_["ToolReady"]["status"]) == (reason, str(ready))
        flipped = before["ToolReady"]["status"] != now_["ToolReady"]["status"]
        assert (now_["ToolReady"]["lastTransitionTime"] != before["ToolReady"]["lastTransitionTime"]) is flipped
        assert now_["Ready"] == born["Ready"]  # the operator's own work did not change
        # The same Pod again, or changed where the condition does not look: no write.
        assert reconcile(children, at + dt.timedelta(seconds=5)) == []
        children[("Pod", "nb")]["status"]["podIP"] = f"10.88.0.{step}"
        children[("Pod", "nb")]["metadata"]["resourceVersion"] = str(201 + 10 * step)
        assert reconcile(children, at + dt.timedelta(seconds=6)) == []
    assert kube.run["status"]["podPhase"] == "Running"


def test_a_failing_pull_costs_no_write_per_retry():
    """The kubelet alternates ErrImagePull (with the error) and ImagePullBackOff (without) forever:
    both give one condition, the back-off half keeping the error the previous condition said."""
    error = {"reason": "ErrImagePull", "message": 'failed to pull image "toolshare.local/nosuch:1": no such host'}
    pull = {"metadata": {"name": "nb"}, "status": {"phase": "Pending", **NODE, "conditions": SCHEDULED,
                                                  "containerStatuses": [tool({"waiting": error}, image="toolshare.local/nosuch:1")]}}
    back_off = {"metadata": {"name": "nb"}, "status": {**pull["status"], "containerStatuses": [tool(
        {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "toolshare.local/nosuch:1"'}},
        image="toolshare.local/nosuch:1")]}}
    first = tool_condition(pull, "nb")
    previous = {"type": "ToolReady", "status": "False", "reason": first.reason, "message": first.message}
    assert tool_condition(back_off, "nb", previous=previous) == first
    assert tool_condition(pull, "nb", previous=previous) == first
    assert "no such host" in first.message


def test_a_crash_loop_costs_no_write_per_restart():
    crashed = {"metadata": {"name": "nb"}, "status": {"phase": "Running", **NODE, "conditions": SCHEDULED,
                                                     "containerStatuses": [tool(CRASHED, restarts=4)]}}
    waiting = {"metadata": {"name": "nb"}, "status": {**crashed["status"], "containerStatuses": [tool(
        {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}}, restarts=5, last=CRASHED)]}}
    assert tool_condition(crashed, "nb") == tool_condition(waiting, "nb")
