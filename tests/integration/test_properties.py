"""Properties on the cluster: whatever runs and shares are thrown at it, the API server refuses
the bad ones with a message, the operator stays up, children equal what the pure renderer says,
and SSH is never exposed."""

from __future__ import annotations

import datetime as dt
import itertools
import json

import kubernetes
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support.objects import Toolshare, runshare
from tests.support.wait import wait_for
from toolshare import render
from toolshare.settings import Settings

NAMES = itertools.count()
endpoint_names = st.sampled_from(["lab", "api", "ssh", "web", "tb"])
endpoints = st.lists(
    st.fixed_dictionaries({
        "name": endpoint_names,
        "port": st.sampled_from([22, 80, 2222, 8080, 8888]),
        "protocol": st.sampled_from(["http", "https", "ssh"]),
    }),
    min_size=1, max_size=4,
)
principals = st.sampled_from(["bob", "carol", "lab", "x y", "a,b", "${x}", "bob@example.org"])


def _exposed_ports(ts, run_name, namespace):
    svc = ts.core.list_namespaced_service(namespace, label_selector=f"toolshare.dev/run={run_name}").items
    ports = [(p.name, p.port) for s in svc for p in s.spec.ports]
    ing = ts.ingresses(run_name)
    return ports, ing


@pytest.fixture(scope="module")
def prop_ns(cluster, operator):
    core = kubernetes.client.CoreV1Api(cluster.client())
    core.create_namespace({"metadata": {"name": "props", "labels": {"toolshare.dev/test": "true"}}})
    yield "props"
    core.delete_namespace("props")


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(eps=endpoints, share_users=st.lists(principals, min_size=1, max_size=3),
       share_endpoints=st.one_of(st.none(), st.lists(endpoint_names, min_size=1, max_size=2, unique=True)))
def test_generated_runs_and_shares_on_the_cluster(cluster, prop_ns, operator, eps, share_users, share_endpoints):
    ts = Toolshare(cluster.client(), prop_ns)
    name = f"p{next(NAMES)}"
    run = {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun", "metadata": {"name": name},
           "spec": {"owner": "alice", "image": "busybox:1.37", "endpoints": eps}}
    try:
        ts.create(run)
    except kubernetes.client.ApiException as e:
        # Refused by the schema: with a message that names the rule, and nothing stored.
        assert e.status == 422 and json.loads(e.body)["message"]
        assert ts.get("toolruns", name) is None
        event("run refused by the schema")
        return
    event("run admitted")
    share = runshare(f"{name}-s", run=name, users=share_users, endpoints=share_endpoints)
    share_refused = False
    try:
        ts.create(share)
    except kubernetes.client.ApiException as e:
        assert e.status == 422 and json.loads(e.body)["message"]
        share_refused = True

    def settled():
        stored = ts.get("toolruns", name)
        cond = next((c for c in (stored.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None)
        if not cond or cond.get("observedGeneration") != stored["metadata"]["generation"]:
            return None
        if not share_refused:
            sc = ts.condition("runshares", f"{name}-s")
            if sc is None:
                return None
        return stored

    stored = wait_for(settled, timeout=30, what=f"run {name} reconciled")
    shares = [] if share_refused else [ts.get("runshares", f"{name}-s")]
    now = dt.datetime.now(dt.timezone.utc)
    expected = render.render_ingresses(stored, shares, Settings(), now, {name: stored})

    def ingresses_match():
        actual = ts.ingresses(name)
        want = {i["metadata"]["labels"]["toolshare.dev/endpoint"]: i["metadata"]["annotations"] for i in expected}
        got = {ep: {k: v for k, v in i["metadata"]["annotations"].items() if k != "toolshare.dev/render-hash"}
               for ep, i in actual.items()}
        return got == want

    wait_for(ingresses_match, timeout=30, what="Ingresses equal to the renderer's")
    ssh_names = {e["name"] for e in eps if e["protocol"] == "ssh"}
    ports, ingresses = _exposed_ports(ts, name, prop_ns)
    assert not any(p == 22 or n in ssh_names for n, p in ports)
    assert not set(ingresses) & ssh_names
    policy = ts.net.list_namespaced_network_policy(prop_ns, label_selector=f"toolshare.dev/run={name}").items
    for pol in policy:
        for rule in pol.spec.ingress or []:
            from_ingress = any((peer.namespace_selector is not None) for peer in rule._from or [])
            if from_ingress:
                assert not any(p.port == 22 or p.port in ssh_names for p in rule.ports or [])
    assert operator.proc.poll() is None, "the operator died"
