"""Nothing lost under faults: the operator killed mid-burst, the control plane restarted mid-burst,
two writers racing on one RunShare, a gate replica killed.

The destructive tests (kill -9 of the operator, restarts of etcd and kube-apiserver) run on a
control plane of their own, so the session cluster other tests use is never disturbed. Whether a
namespace converged is decided by tests/support/expected.py: the children and statuses the pure
renderer derives from the ToolRuns and RunShares stored at the end, compared with what the API
server holds.

(The webhook being down is covered in test_admission.py::test_webhook_down_refuses_creates.)
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest

from tests.support import cluster as support, rbac
from tests.support.auth import get
from tests.support.burst import ShareBurst, retrying
from tests.support.expected import converged
from tests.support.install import install_crds, start_operator
from tests.support.objects import GROUP, VERSION, Toolshare, runshare, toolrun
from tests.support.operator_process import OperatorProcess
from tests.support.wait import wait_for
from toolshare.local import services as devservices
from toolshare.local.controlplane import cluster as controlplane

BURST = 500


@dataclass
class Plane:
    """A control plane and operator of this module's own."""

    directory: Path
    cluster: support.TestCluster
    operator: OperatorProcess

    @property
    def client(self) -> kubernetes.client.ApiClient:
        return self.cluster.client()


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    directory = tmp_path_factory.mktemp("own-plane")
    controlplane.up(directory)
    tc = support.TestCluster(directory / "kubeconfig", directory, local_dir=directory)
    try:
        install_crds(tc)
        work = directory / "operator-work"
        work.mkdir()
        proc = start_operator(tc, work)
    except BaseException:
        support.stop(tc)
        raise
    yield Plane(directory, tc, proc)
    proc.stop()
    print(f"own-plane operator log: {proc.log_path}")
    support.stop(tc)


def _namespace(client, name: str) -> str:
    kubernetes.client.CoreV1Api(client).create_namespace({"metadata": {"name": name}})
    return name


def _runs(ts: Toolshare, count: int = 6) -> list[str]:
    names = []
    for i in range(count):
        endpoints = [{"name": "lab", "port": 8888, "protocol": "http"},
                     {"name": "ssh", "port": 22, "protocol": "ssh"}]
        if i % 3 == 0:
            endpoints.append({"name": "api", "port": 9000, "protocol": "http", "path": "/api"})
        ts.create(toolrun(f"r{i}", endpoints=endpoints, labels={"team": "ab"[i % 2]}))
        names.append(f"r{i}")
    return names


def _log_after(proc: OperatorProcess, offset: int) -> str:
    return proc.log_path.read_text(errors="replace")[offset:]


def test_operator_killed_mid_burst_converges_exactly(plane):
    ns = _namespace(plane.client, "kill-9")
    ts = Toolshare(plane.client, ns)
    runs = _runs(ts)
    converged(plane.client, ns)

    burst = ShareBurst(plane.client, ns, runs, changes=BURST, seed=11)
    burst.start()
    burst.wait_until(BURST // 3)
    pid = plane.operator.proc.pid
    plane.operator.stop(signal.SIGKILL)
    assert plane.operator.proc.returncode == -signal.SIGKILL
    killed_at = burst.done
    offset = plane.operator.log_path.stat().st_size
    time.sleep(1.0)  # the burst keeps writing (and retrying what the missing webhook refuses)
    plane.operator.start()
    assert plane.operator.proc.pid != pid
    burst.finish()
    settle = converged(plane.client, ns, timeout=120)
    print(f"killed after {killed_at}/{BURST} changes; converged {settle:.1f}s after the burst ended")
    assert plane.operator.proc.poll() is None
    assert "Traceback" not in _log_after(plane.operator, offset)


def test_etcd_restarted_twice_mid_burst(plane):
    """etcd stopped and started in place twice during a burst: the API server re-initialises its
    watch cache, kopf's watches end with 410 Gone and list again, and the same operator process
    converges on everything written before, during and after."""
    ns = _namespace(plane.client, "restarts")
    ts = Toolshare(plane.client, ns)
    runs = _runs(ts)
    converged(plane.client, ns)
    operator_pid = plane.operator.proc.pid

    burst = ShareBurst(plane.client, ns, runs, changes=BURST, seed=23)
    burst.start()
    took = []
    for at in (BURST // 4, BURST // 2):
        burst.wait_until(at)
        started = time.monotonic()
        controlplane.restart(plane.directory, ("etcd",))
        took.append(time.monotonic() - started)
    burst.finish()
    settle = converged(plane.client, ns, timeout=120)
    print(f"etcd restarts {', '.join(f'{t:.1f}s' for t in took)}; converged {settle:.1f}s after the burst")

    # The same operator process, reconnected: a change made now still arrives.
    assert plane.operator.proc.pid == operator_pid and plane.operator.proc.poll() is None
    retrying(ts.create, runshare("after-restarts", run=runs[0], users=["zoe"]))
    wait_for(lambda: "zoe" in ts.annotations(runs[0])["lab"]["toolshare.dev/allowed-users"], timeout=30,
             what="a share made after the restarts on the Ingress")
    converged(plane.client, ns, timeout=30)


def _delete_once_relaunched(plane: Plane, ts: Toolshare, doomed: list[tuple[str, str]]) -> threading.Thread:
    """A thread that waits until kube-apiserver is launched again, then deletes `doomed` ((plural,
    name) pairs) the moment it answers: before the operator's watches are back (kopf backs off 1, 1,
    2, 3... s between attempts), so they see these objects only as missing from their re-list."""
    before = controlplane.State.load(plane.directory).pids["kube-apiserver"]
    errors: list[BaseException] = []

    def delete(plural: str, name: str) -> None:
        if plural == "ingresses":
            ts.net.delete_namespaced_ingress(name, ts.ns, _request_timeout=5)
        else:
            ts.api.delete_namespaced_custom_object(GROUP, VERSION, ts.ns, plural, name, _request_timeout=5)

    def run() -> None:
        try:
            deadline = time.monotonic() + 180
            while controlplane.State.load(plane.directory).pids["kube-apiserver"] == before:
                assert time.monotonic() < deadline, "kube-apiserver was not relaunched"
                time.sleep(0.02)
            for plural, name in doomed:
                retrying(delete, plural, name)
        except BaseException as e:  # noqa: BLE001 - reported by join_checked
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True, name="delete-once-relaunched")
    thread.errors = errors
    thread.start()
    return thread


RESTART_BURST = 300


@pytest.mark.parametrize("components", [("kube-apiserver",), ("etcd", "kube-apiserver")],
                         ids=["kube-apiserver", "etcd-and-kube-apiserver"])
def test_api_server_restarted_mid_burst(plane, components):
    """kube-apiserver (alone, or with its etcd) stopped and started in place during a burst. Every
    watch of the operator breaks; the new API server resumes some from their resourceVersion and
    answers others with 410 Gone, and then kopf lists that kind again: whatever was deleted since
    the watch's last event (by the burst, or the RunShare and Ingress deleted here the moment the new
    API server is launched) is then only *missing* from the list, never reported as DELETED. The
    same operator process converges exactly, within a bound that an unreported deletion (kept for
    good), a dropped write or a watch left waiting for kopf's 60 s client timeout would miss."""
    ns = _namespace(plane.client, "restart-" + "-".join(c.split("-")[-1] for c in components))
    ts = Toolshare(plane.client, ns)
    runs = _runs(ts)
    ts.create(runshare("doomed", run=runs[1], users=["yara"]))
    converged(plane.client, ns)
    assert "yara" in ts.annotations(runs[1])["lab"]["toolshare.dev/allowed-users"]
    operator_pid = plane.operator.proc.pid
    offset = plane.operator.log_path.stat().st_size

    burst = ShareBurst(plane.client, ns, runs, changes=RESTART_BURST, seed=37 + len(components))
    burst.start()
    burst.wait_until(RESTART_BURST // 2)
    deleter = _delete_once_relaunched(plane, ts, [("runshares", "doomed"), ("ingresses", f"{runs[2]}.lab")])
    started = time.monotonic()
    controlplane.restart(plane.directory, components)
    took = time.monotonic() - started
    deleter.join(120)
    assert not deleter.is_alive() and not deleter.errors, deleter.errors
    burst.finish()
    # A healthy operator settles within seconds; 45 s leaves room for a loaded 2-core machine.
    settle = converged(plane.client, ns, timeout=45)
    print(f"{' and '.join(components)} restarted in {took:.1f}s; converged {settle:.1f}s after the burst")
    assert ts.get("runshares", "doomed") is None
    assert "yara" not in ts.annotations(runs[1])["lab"]["toolshare.dev/allowed-users"]

    # The same operator process, reconnected: a change made now still arrives.
    assert plane.operator.proc.pid == operator_pid and plane.operator.proc.poll() is None
    retrying(ts.create, runshare("after-restart", run=runs[0], users=["zoe"]))
    wait_for(lambda: "zoe" in ts.annotations(runs[0])["lab"]["toolshare.dev/allowed-users"], timeout=30,
             what="a share made after the restart on the Ingress")
    converged(plane.client, ns, timeout=30)
    assert not _lost(_log_after(plane.operator, offset))


def _lost(log: str) -> list[str]:
    """Log lines of an event handler that failed (kopf drops the event), a watch that died, or an
    unreported deletion left unhandled. (A webhook that fails while the API server is away only
    refuses a write, which its client retries.)"""
    return [line for line in log.splitlines()
            if re.search(r"Handler '[^']+' failed with an exception|has failed|unreported deletion", line)]


def test_control_plane_restarts_in_place(plane):
    """kube-apiserver and etcd restarted with the argv they were started with: same port, same
    certificates and tokens, same data. (Last of the destructive tests: see the report on the
    operator's watches after an API server restart.)"""
    before = controlplane.State.load(plane.directory)
    ts = Toolshare(plane.client, _namespace(plane.client, "in-place"))
    ts.create(toolrun("kept"))
    controlplane.restart(plane.directory, ("etcd", "kube-apiserver"))
    after = controlplane.State.load(plane.directory)
    assert after.server == before.server and after.argv == before.argv
    assert after.pids["kube-apiserver"] != before.pids["kube-apiserver"]
    assert after.pids["etcd"] != before.pids["etcd"]
    assert after.pids["kube-controller-manager"] == before.pids["kube-controller-manager"]
    assert retrying(ts.get, "toolruns", "kept")["spec"]["owner"] == "alice"
    with pytest.raises(controlplane.ClusterError, match="unknown components"):
        controlplane.restart(plane.directory, ("kube-dns",))


# --- on the session cluster: nothing destructive ------------------------------------------------

def test_two_writers_on_one_share_lose_no_update(cluster, namespace, operator):
    ts = Toolshare(cluster.client(), namespace)
    ts.create(toolrun("nb"))
    ts.create(runshare("team", run="nb", users=["bob"]))
    api = kubernetes.client.CustomObjectsApi(cluster.client())
    rounds = 10
    barrier = threading.Barrier(2, timeout=30)
    conflicts = {"a": 0, "b": 0}
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            for i in range(rounds):
                share, synced = ts.get("runshares", "team"), False
                while True:
                    if synced:  # after a conflict: read again, then try again
                        share = ts.get("runshares", "team")
                    else:  # both read the same version, then both write: one must lose
                        barrier.wait()
                        synced = True
                    share["spec"]["users"] = share["spec"]["users"] + [f"{tag}-{i}"]
                    try:  # PUT carries metadata.resourceVersion: a precondition
                        api.replace_namespaced_custom_object("toolshare.dev", "v1alpha1", namespace, "runshares",
                                                             "team", share)
                        break
                    except kubernetes.client.ApiException as e:
                        if e.status != 409:
                            raise
                        conflicts[tag] += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=writer, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    # Every round both wrote from the same version, so every round one of them was refused.
    assert sum(conflicts.values()) >= rounds, conflicts
    expected = sorted(["bob"] + [f"{t}-{i}" for t in "ab" for i in range(rounds)])
    assert sorted(ts.get("runshares", "team")["spec"]["users"]) == expected
    wait_for(lambda: ts.annotations("nb").get("lab", {}).get("toolshare.dev/allowed-users") == ",".join(expected),
             timeout=30, what="every user of both writers on the Ingress")
    converged(cluster.client(), namespace, timeout=30)
    assert ts.get("toolruns", "nb")["status"]["sharedWith"]["users"] == expected


def test_killed_gate_replica_leaves_the_others_answering(cluster, namespace, operator, oauth2_proxy, issuer,
                                                         tmp_path):
    ts = Toolshare(cluster.client(), namespace)
    auth = f"{oauth2_proxy.url}/oauth2/auth"
    replicas = [devservices.gate(cluster.kubeconfig(), auth, tmp_path, env=rbac.POLICY_ENV).start()
                for _ in range(3)]
    try:
        ts.create(toolrun("nb"))
        ts.create(runshare("to-bob", run="nb", users=["bob"]))
        path = f"/check/{namespace}/nb/lab"
        people = {"alice": 202, "bob": 202, "dave": 403}
        tokens = {p: issuer.token(p) for p in people}

        def answers(gate) -> dict:
            return {p: get(gate.url + path, tokens[p])[0] for p in people}

        for g in replicas:
            wait_for(lambda: answers(g) == people, timeout=30, what=f"replica {g.url} answering")

        victim, survivors = replicas[0], replicas[1:]
        seen: list[tuple[str, str, int]] = []
        stop = threading.Event()

        def load() -> None:  # the survivors are asked throughout the kill
            while not stop.is_set():
                for g in survivors:
                    for p in ("alice", "dave"):
                        seen.append((g.url, p, get(g.url + path, tokens[p])[0]))

        thread = threading.Thread(target=load)
        thread.start()
        wait_for(lambda: seen, what="answers under load before the kill")
        os.killpg(victim.proc.pid, signal.SIGKILL)
        assert victim.proc.wait(10) == -signal.SIGKILL
        killed_at = len(seen)
        rounds = 3 * 2 * len(survivors)  # three rounds of alice and dave on every survivor after it
        wait_for(lambda: len(seen) >= killed_at + rounds, what="answers under load after the kill")
        stop.set()
        thread.join(30)
        with pytest.raises(OSError):
            get(victim.url + path, tokens["alice"])
        assert seen and {s for _, p, s in seen if p == "alice"} == {202}
        assert {s for _, p, s in seen if p == "dave"} == {403}
        # And they still follow changes: revoking bob's share closes both survivors to him.
        ts.delete("runshares", "to-bob")
        for g in survivors:
            wait_for(lambda: answers(g) == {**people, "bob": 403}, timeout=30, what=f"{g.url} sees the revoke")
    finally:
        for g in replicas:
            g.stop()
