"""The guard in the rendered children (render/guard.py): what moves to the guard, what never does."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, strategies as st

from toolshare import grant, model, render
from toolshare.guard.config import GuardConfig
from toolshare.render.guard import GUARD_CONTAINER, guard_ports, ops_port
from toolshare.settings import Settings

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
KEY = grant.public_text(grant.new_key())
GUARDED = Settings(guard_image="registry.example.org/toolshare:0.1.0", grant_public_key=KEY)
NGINX = "nginx.ingress.kubernetes.io/"


def run_(endpoints=None):
    return {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun",
            "metadata": {"name": "nb", "namespace": "ns", "uid": "u1", "labels": {}},
            "spec": {"owner": "alice", "image": "jupyter/base-notebook", "endpoints": endpoints or [
                {"name": "lab", "port": 8888, "protocol": "http"},
                {"name": "tb", "port": 6006, "protocol": "https", "path": "/tb"},
                {"name": "ssh", "port": 22, "protocol": "ssh"}]}}


def children(run, settings=GUARDED):
    return {c["kind"]: c for c in render.render_children(run, [], settings, NOW)}


def test_guarded_the_router_reaches_the_guard_and_the_tool_is_reachable_from_the_pod_alone():
    run = run_()
    got = children(run)
    tool, guard = got["Pod"]["spec"]["containers"]
    assert guard["name"] == GUARD_CONTAINER and guard["image"] == GUARDED.guard_image
    assert guard["command"] == ["toolshare", "guard"]
    assert got["Pod"]["spec"]["automountServiceAccountToken"] is False  # no Kubernetes credentials
    # The endpoint names (the Service's targetPorts) are the guard's ports now; SSH stays the tool's.
    assert guard["ports"] == [{"name": "lab", "containerPort": 18888, "protocol": "TCP"},
                              {"name": "tb", "containerPort": 16006, "protocol": "TCP"}]
    assert tool["ports"] == [{"containerPort": 8888, "protocol": "TCP"},
                             {"name": "ssh", "containerPort": 22, "protocol": "TCP"},
                             {"containerPort": 6006, "protocol": "TCP"}]
    assert [p["targetPort"] for p in got["Service"]["spec"]["ports"]] == ["lab", "tb"]
    # The router's namespace reaches the guard's ports only: not 8888, 6006 or 22.
    rule, = got["NetworkPolicy"]["spec"]["ingress"]
    assert rule["ports"] == [{"port": 18888, "protocol": "TCP"}, {"port": 16006, "protocol": "TCP"}]
    for ingress in (c for c in render.render_children(run, [], GUARDED, NOW) if c["kind"] == "Ingress"):
        annotations = ingress["metadata"]["annotations"]
        assert annotations[NGINX + "auth-response-headers"].split(",")[-1] == grant.HEADER
        assert NGINX + "backend-protocol" not in annotations  # the guard speaks HTTP, HTTPS to the tool
    ready = guard["readinessProbe"]["httpGet"]
    assert ready == {"path": "/readyz", "port": ops_port(run)}
    assert guard["securityContext"]["readOnlyRootFilesystem"] and guard["securityContext"]["runAsNonRoot"]


def test_the_guard_takes_exactly_the_configuration_it_is_rendered_with():
    run = run_()
    guard = children(run)["Pod"]["spec"]["containers"][1]
    config = GuardConfig.from_env({e["name"]: e["value"] for e in guard["env"]})
    assert (config.namespace, config.run, config.gate_url) == ("ns", "nb", GUARDED.gate_url)
    assert [(e.name, e.port, e.tool_port, e.tls) for e in config.endpoints] == [
        ("lab", 18888, 8888, False), ("tb", 16006, 6006, True)]
    assert config.ops_port == ops_port(run) and config.public_key == KEY


def test_unguarded_nothing_changes():
    got = children(run_(), Settings())
    assert [c["name"] for c in got["Pod"]["spec"]["containers"]] == [model.CONTAINER_NAME]
    assert got["NetworkPolicy"]["spec"]["ingress"][0]["ports"] == [{"port": 8888, "protocol": "TCP"},
                                                                  {"port": 6006, "protocol": "TCP"}]


def test_guard_and_ops_ports_never_take_a_port_the_run_declares():
    run = run_([{"name": n, "port": p, "protocol": "http", "path": f"/{n}"}
                for n, p in (("a", 8888), ("b", 18888), ("c", 65000), ("ops", 15020))])
    ports = guard_ports(run)
    assert ports == {"a": 65535, "b": 28888, "c": 65534, "ops": 25020}  # a's +10000 is b's port
    assert ops_port(run) == 15021


@given(st.lists(st.integers(1, 65535).filter(lambda p: p != 22), min_size=1, max_size=8, unique=True))
def test_guard_ports_are_distinct_and_apart_from_every_declared_port(declared):
    run = run_([{"name": f"e{i}", "port": p, "protocol": "http", "path": f"/e{i}"} for i, p in enumerate(declared)])
    ports = list(guard_ports(run).values())
    assert len(ports) == len(declared)  # every HTTP endpoint has one
    taken = {ep.port for ep in model.http_endpoints(run)} | {ops_port(run)}
    assert len(set(ports)) == len(ports) and not set(ports) & taken | (set(ports) & set(declared))


def test_settings_refuse_a_guard_without_the_key_and_a_bad_key_or_image():
    import pytest
    from toolshare.settings import SettingsError

    for kwargs, words in (({"guard_image": "toolshare:1"}, "go together"),
                          ({"grant_public_key": KEY}, "go together"),
                          ({"guard_image": "toolshare:1", "grant_public_key": "short"}, "TOOLSHARE_GRANT_PUBLIC_KEY"),
                          ({"guard_image": "Tool share; rm", "grant_public_key": KEY}, "TOOLSHARE_GUARD_IMAGE")):
        with pytest.raises(SettingsError, match=words):
            Settings(**kwargs)
