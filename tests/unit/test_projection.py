"""The cache keeps projections (cache.project), not whole objects: a projection must keep every
field a decision reads. Children: the reconciler's comparison (needs_write: render hash, then
contains(actual, desired)) must give the same verdict on the projection as on the whole object, so
drift on any field we set is still seen. Runs and shares: rendering, status and share verdicts
must be the same from the projection."""

from __future__ import annotations

import copy
import datetime as dt

import pytest

from tests.support.objects import runshare, toolrun
from toolshare import access, model, render
from toolshare.controller.reconcile import Written, finish_child, needs_write
from toolshare.settings import Settings
from toolshare.state.cache import SERVER_FILLED_SPEC, pack, project, unpack

NOW = dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc)
SETTINGS = [Settings(), Settings(tls_cluster_issuer="letsencrypt", ingress_class="public",
                                 owner_access_selector="toolshare.dev/ssh-access=true")]
ENDPOINTS = [{"name": "lab", "port": 8888, "protocol": "http"},
             {"name": "api", "port": 8443, "protocol": "https", "path": "/api"},
             {"name": "ssh", "port": 22, "protocol": "ssh"}]


def stored(obj):
    return unpack(pack(obj))


def live_run(name="nb"):
    run = toolrun(name, endpoints=ENDPOINTS, labels={"team": "a"})
    run["metadata"].update(namespace="ns", uid="run-uid", resourceVersion="7", generation=3,
                           creationTimestamp="2026-11-01T00:00:00Z",
                           annotations={"kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 5000 + "}",
                                        "note": "kept"},
                           managedFields=[{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}])
    run["status"] = {"urls": ["http://nb.toolshare.localhost/lab"], "podPhase": "Pending", "observedGeneration": 3,
                     "sharedWith": {"users": ["bob"], "groups": [], "summary": "bob"},
                     "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "m",
                                     "lastTransitionTime": "2026-11-01T00:00:00Z", "observedGeneration": 3}]}
    return run


def live_share(name="s", run="nb"):
    share = runshare(name, run=run, users=["bob"], groups=["lab"])
    share["metadata"].update(namespace="ns", uid=f"share-{name}", resourceVersion="8", generation=1,
                             creationTimestamp="2026-11-01T00:00:00Z",
                             annotations={"toolshare.dev/shared-by": "alice", "toolshare.dev/shared-by-groups": ""})
    share["status"] = {"runs": [run], "conditions": [{"type": "Ready", "status": "True", "reason": "Active",
                                                      "message": "m", "lastTransitionTime": "2026-11-01T00:00:00Z"}]}
    return share


def as_served(desired: dict) -> dict:
    """What the API server gives back for an applied child: defaults, identity, managedFields, status."""
    obj = copy.deepcopy(desired)
    meta = obj["metadata"]
    meta.update(uid=f"uid-{obj['kind']}", resourceVersion="42", generation=1, creationTimestamp="2026-11-22T00:00:00Z",
                managedFields=[{"manager": "toolshare", "operation": "Apply", "fieldsV1": {"f:spec": {"f:x": {}}}}])
    meta["labels"] = {**meta["labels"], "added-by-someone": "x"}
    meta["annotations"] = {**meta["annotations"], "other-controller/annotation": "y"}
    if obj["kind"] == "Service":
        obj["spec"].update(clusterIP="10.0.0.12", clusterIPs=["10.0.0.12"], ipFamilies=["IPv4"],
                           ipFamilyPolicy="SingleStack", internalTrafficPolicy="Cluster", sessionAffinity="None")
        obj["status"] = {"loadBalancer": {}}
    if obj["kind"] == "Ingress":
        obj["status"] = {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}
    if obj["kind"] == "Pod":
        obj["spec"].update(restartPolicy="Always", dnsPolicy="ClusterFirst", schedulerName="default-scheduler",
                           tolerations=[{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}])
        obj["spec"]["containers"][0].update(terminationMessagePath="/dev/termination-log", imagePullPolicy="IfNotPresent")
        obj["status"] = {"phase": "Running", "qosClass": "BestEffort", "podIP": "10.88.0.7", "startTime": "2026-11-22T00:00:01Z",
                         "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-22T00:00:01Z"},
                                        {"type": "PodReadyToStartContainers", "status": "True"},
                                        {"type": "Ready", "status": "True", "lastProbeTime": None}],
                         "containerStatuses": [{"name": "tool", "image": "jupyter/base-notebook", "imageID": "sha256:1",
                                                "containerID": "containerd://2", "ready": True, "started": True,
                                                "restartCount": 1, "state": {"running": {"startedAt": "2026-11-22T00:00:09Z"}},
                                                "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                                                             "startedAt": "2026-11-22T00:00:02Z"}}}]}
    return obj


def leaves(value, path=()):
    """Every leaf path of a desired object (list items by index)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, (*path, i))
    else:
        yield path


def set_path(obj, path, value):
    for step in path[:-1]:
        obj = obj[step]
    obj[path[-1]] = value


def desired_children(settings):
    run, share = live_run(), live_share()
    return [finish_child(c, run) for c in render.render_children(run, [share], settings, NOW, {"nb": run})]


@pytest.mark.parametrize("settings", SETTINGS)
def test_every_rendered_child_kind_is_covered(settings):
    assert {c["kind"] for c in desired_children(settings)} == {"Pod", "Service", "Ingress", "NetworkPolicy"}


@pytest.mark.parametrize("settings", SETTINGS)
def test_a_stored_child_compares_like_the_whole_child(settings):
    for desired in desired_children(settings):
        served = as_served(desired)
        kept = stored(served)
        assert "managedFields" not in kept["metadata"] and len(pack(served)) < len(repr(served)) / 3
        assert needs_write(desired, served) is False and needs_write(desired, kept) is False
        if desired["kind"] == "Pod":
            # Compared by render hash only; its status feeds the run's podPhase and ToolReady.
            assert kept["metadata"]["annotations"] == served["metadata"]["annotations"]
            assert "spec" not in kept
            assert kept["status"] == {
                "phase": "Running",
                "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "tool", "image": "jupyter/base-notebook", "ready": True, "restartCount": 1,
                                       "state": {"running": {}},
                                       "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}
            assert render.tool_condition(kept) == render.tool_condition(served) == (
                True, "Running", "container tool (image jupyter/base-notebook) is running and ready; restarts=1")
            continue
        # Drift on any field we set is seen on the stored projection exactly as on the whole object.
        for path in leaves({k: v for k, v in desired.items() if k != "status"}):
            drifted = copy.deepcopy(served)
            set_path(drifted, path, "drifted-by-someone")
            assert needs_write(desired, drifted) is needs_write(desired, stored(drifted)) is True, path


@pytest.mark.parametrize("settings", SETTINGS)
def test_no_rendered_child_sets_a_field_the_cache_drops(settings):
    for desired in desired_children(settings):
        assert not SERVER_FILLED_SPEC.get(desired["kind"], frozenset()) & set(desired.get("spec") or {})


def test_a_stored_run_and_share_decide_like_the_whole_objects():
    run, share = live_run(), live_share()
    srun, sshare = stored(run), stored(share)
    assert srun["spec"] == run["spec"] and srun["status"] == run["status"] and sshare["status"] == share["status"]
    assert "last-applied-configuration" not in str(srun) and srun["metadata"]["annotations"] == {"note": "kept"}
    for key in ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "labels"):
        assert srun["metadata"][key] == run["metadata"][key]
    assert sshare["metadata"]["annotations"] == share["metadata"]["annotations"]
    for settings in SETTINGS:
        assert (render.render_children(srun, [sshare], settings, NOW, {"nb": srun})
                == render.render_children(run, [share], settings, NOW, {"nb": run}))
        assert (render.run_status(srun, [sshare], settings, NOW, {"nb": srun})
                == render.run_status(run, [share], settings, NOW, {"nb": run}))
        assert model.host_for(srun, settings) == model.host_for(run, settings)
    assert access.share_state(sshare, {"nb": srun}, NOW) == access.share_state(share, {"nb": run}, NOW)
    deleting = copy.deepcopy(run)
    deleting["metadata"]["deletionTimestamp"] = "2026-11-22T00:00:00Z"
    assert stored(deleting)["metadata"]["deletionTimestamp"] == "2026-11-22T00:00:00Z"


def test_any_object_round_trips_through_pack():
    odd = {"apiVersion": "x/v1", "kind": "Other", "metadata": {"name": "é", "uid": "u", "labels": {"k": "v"}},
           "spec": {"list": [1, 2.5, None, True, {"deep": ["a"]}], "text": "ü" * 300}, "status": {"n": 1}}
    assert stored(odd) == project(odd) == {**odd, "metadata": {"name": "é", "uid": "u", "labels": {"k": "v"}}}


def test_written_keeps_projections_until_the_cache_has_caught_up():
    versions: dict[str, int] = {}
    written = Written(version=lambda uid: versions.get(uid, 0))
    written._sweep_at = 4
    served = [as_served(c) for c in desired_children(SETTINGS[0])]
    for i, obj in enumerate(served):
        obj["metadata"]["resourceVersion"] = str(100 + i)
    versions[served[0]["metadata"]["uid"]] = 100  # its echo is in the cache
    for obj in served[:3]:
        written.remember(obj)
    assert all("managedFields" not in o["metadata"] for o in written.objects.values())
    assert Written.key(served[0]) in written.objects  # no sweep below the threshold
    written.remember(served[3])  # the fourth triggers a sweep: only the caught-up write goes
    assert set(written.objects) == {Written.key(o) for o in served[1:4]}
    assert written._sweep_at == 1024
    written.max_age = -1  # older than max_age (object gone, echo never came): dropped too
    written.sweep()
    assert written.objects == {}


def test_a_deleted_child_is_not_stood_in_for_by_our_last_write_of_it():
    """A child we wrote, whose echo was lost and which was then deleted, must be re-created."""
    written = Written(version=lambda uid: 0)
    ours = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "r2.lab", "namespace": "ns", "uid": "u-old", "resourceVersion": "7"}}
    key = Written.key(ours)
    written.remember(ours)
    assert written.newest(None, key) is not None  # looks present before the deletion is known
    written.deleted({**ours, "metadata": {**ours["metadata"], "uid": "u-other"}})  # another incarnation
    assert written.newest(None, key) is not None
    written.deleted(ours)
    assert written.newest(None, key) is None
