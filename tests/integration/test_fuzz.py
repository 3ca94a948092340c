"""Fuzzing on the real API server with the operator running: hypothesis throws ToolRun and RunShare
specs at it, valid and invalid (names, endpoints with ssh and port 22, principals from the hostile
corpus, selectors, expiresAt), and after every example:

- a refused object was refused clearly (422 or 403, the message naming the field) and is not stored;
- the whole namespace equals what the pure renderer derives from the stored objects (children and
  statuses; an invalid stored spec therefore has Ready=False with the renderer's reason and message);
- SSH is exposed nowhere and no annotation carries a principal outside the grammar;
and after the run the operator is alive, logged no traceback, and a canary run gets Ready quickly.

Example counts are bounded (profile fuzz-ci: derandomized, about 2 minutes); HYPOTHESIS_PROFILE=fuzz-long
runs many more locally.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import kubernetes
import pytest
import yaml
from hypothesis import HealthCheck, Phase, event, given, settings, strategies as st

from tests.support.expected import converged, stored
from tests.support.objects import GROUP, VERSION, Toolshare, toolrun
from tests.support.wait import wait_for
from toolshare import model, render
from toolshare.principals import is_valid_principal

# No shrinking in CI: each attempt on a real cluster can wait for convergence, and the first
# failing example, printed in full, is what a reader needs.
PROFILES = {
    "fuzz-ci": settings(max_examples=60, deadline=None, derandomize=True, database=None,
                        phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck)),
    "fuzz-long": settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck)),
}
for _name, _profile in PROFILES.items():
    settings.register_profile(_name, _profile)
FUZZ = PROFILES.get(os.environ.get("HYPOTHESIS_PROFILE", ""), PROFILES["fuzz-ci"])

CORPUS = [e["value"] * e.get("repeat", 1)
          for e in yaml.safe_load((Path(__file__).parents[1] / "data" / "hostile_principals.yaml").read_text())]
SERIAL = itertools.count()

# --- strategies ------------------------------------------------------------------------------



def mostly(good, bad, one_in: int = 5):
    """`bad` one time in `one_in`, else `good`: mostly valid input with invalid input mixed in, so
    refusals and the operator's own verdicts both get exercised."""
    return st.integers(0, one_in - 1).flatmap(lambda i: bad if i == one_in - 1 else good)


valid_principal = st.sampled_from(["bob", "carol", "lab", "data-science", "bob@example.org", "svc:ci/bot"])
bad_principal = st.one_of(st.sampled_from(CORPUS), st.sampled_from(["x y", "a,b", "${x}", "", "-lead"]))
principals = mostly(st.lists(valid_principal, min_size=1, max_size=3, unique=True),
                    st.lists(st.one_of(valid_principal, bad_principal), min_size=0, max_size=3))
endpoint_name = st.sampled_from(["lab", "api", "ssh", "web", "tb", "Bad_Name", "x--y", "1234"])
any_endpoint = st.fixed_dictionaries(
    {"name": endpoint_name,
     "port": st.sampled_from([22, 80, 2222, 8080, 8888, 9000, 0, 70000]),
     "protocol": st.sampled_from(["http", "https", "ssh", "ssh", "tcp"])},
    optional={"path": st.sampled_from(["/", "/lab", "/a/b", "lab", "/x/", "/a b", "/.."])})


@st.composite
def valid_endpoint(draw):
    protocol = draw(st.sampled_from(["http", "http", "https", "ssh"]))
    ep = {"name": draw(st.sampled_from(["lab", "api", "web", "tb", "ssh", "term"])),
          "port": 22 if protocol == "ssh" and draw(st.booleans()) else draw(st.sampled_from([80, 2222, 8080, 8888, 9000])),
          "protocol": protocol}
    if protocol != "ssh" and (path := draw(st.sampled_from([None, "/", "/lab", "/a/b"]))):
        ep["path"] = path
    return ep


def _served_at(ep: dict) -> tuple:
    return ("ssh", ep["name"]) if ep["protocol"] == "ssh" else ("http", ep.get("path", "/"))


endpoints = mostly(st.lists(valid_endpoint(), min_size=0, max_size=3,
                            unique_by=(lambda e: e["name"], lambda e: e["port"], _served_at)),
                   st.lists(any_endpoint, min_size=0, max_size=4))
run_spec = st.fixed_dictionaries({
    "name": mostly(st.just("ok"), st.sampled_from(["Upper", "1digit", "dot.ted", "under_score", "long"]), 8),
    "owner": mostly(st.sampled_from(["alice", "alice", "bob", "carol@example.org"]), st.sampled_from(CORPUS), 8),
    "endpoints": endpoints,
    "team": st.sampled_from([None, "a", "b"]),
})
selector = st.sampled_from([
    {"matchLabels": {"team": "a"}},
    {"matchExpressions": [{"key": "team", "operator": "In", "values": ["b"]}]},
    {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]},
    {"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]},
    {},  # would share every run: refused
    {"matchLabels": {"bad key!": "a"}},
    {"matchExpressions": [{"key": "team", "operator": "In"}]},
    {"matchExpressions": [{"key": "team", "operator": "Exists", "values": ["a"]}]},
])
share_spec = st.fixed_dictionaries({
    "target": mostly(st.sampled_from(["own"] * 6 + ["ghost", "Bad.Ref"]), selector, 3),
    "users": mostly(principals, st.none()),
    "groups": st.one_of(st.none(), st.none(), principals),
    "endpoints": st.one_of(st.none(), st.none(), st.lists(endpoint_name, min_size=0, max_size=2)),
    "expiresAt": st.sampled_from([None] * 6 + ["2099-01-01T00:00:00Z", "2020-01-01T00:00:00Z", "tomorrow",
                                              "2026-13-45T00:00:00Z"]),
})


def build_run(spec: dict, serial: int) -> dict:
    names = {"ok": f"r{serial}", "Upper": f"R{serial}", "1digit": f"{serial}r", "dot.ted": f"r{serial}.x",
             "under_score": f"r_{serial}", "long": f"r{serial}-" + "x" * 64}
    run = toolrun(names[spec["name"]], owner=spec["owner"], endpoints=spec["endpoints"],
                  labels={"team": spec["team"]} if spec["team"] else None)
    run["spec"]["image"] = "busybox:1.37"
    return run


def build_share(spec: dict, serial: int, run_name: str) -> dict:
    target = spec["target"]
    body: dict = {}
    if isinstance(target, dict):
        body["runSelector"] = target
    else:
        body["runRef"] = {"name": {"own": run_name, "ghost": f"ghost{serial}", "Bad.Ref": "Bad.Ref"}[target]}
    for field in ("users", "groups", "endpoints", "expiresAt"):
        if spec[field] is not None:
            body[field] = spec[field]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RunShare", "metadata": {"name": f"s{serial}"}, "spec": body}


# --- invariants ------------------------------------------------------------------------------

# A refusal names the field it is about: the API server's field path, or the webhook's.
FIELDS = ("spec", "metadata.name")


def refused_clearly(ts: Toolshare, obj: dict) -> str | None:
    """Create `obj`; None if stored, else assert the refusal is clear and nothing was stored."""
    plural = obj["kind"].lower() + "s"
    try:
        ts.create(obj)
        return None
    except kubernetes.client.ApiException as e:
        message = json.loads(e.body).get("message", "") if e.body else ""
        assert e.status in (403, 422), (e.status, message)
        assert any(f in message for f in FIELDS), f"refusal does not name the field: {message}"
        assert ts.get(plural, obj["metadata"]["name"]) is None, "refused, yet stored"
        return message


def ssh_and_annotation_violations(client, namespace: str) -> list[str]:
    """SSH reachable through a child, or a principal outside the grammar in an annotation."""
    runs = {r["metadata"]["name"]: r for r in stored(client, namespace, "toolruns")}
    net = kubernetes.client.NetworkingV1Api(client)
    core = kubernetes.client.CoreV1Api(client)
    selector = f"{model.LABEL_MANAGED_BY}={model.MANAGED_BY}"
    out = []

    def ssh_of(run_name):
        eps = (runs.get(run_name) or {}).get("spec", {}).get("endpoints") or []
        return ({e.get("name") for e in eps if e.get("protocol") != "http" and e.get("protocol") != "https"},
                {e.get("port") for e in eps if e.get("protocol") not in ("http", "https")} | {22})

    for svc in core.list_namespaced_service(namespace, label_selector=selector).items:
        names, ports = ssh_of(svc.metadata.labels[model.LABEL_RUN])
        out += [f"Service {svc.metadata.name} exposes {p.name}/{p.port}" for p in svc.spec.ports
                if p.name in names or p.port in ports]
    for ing in net.list_namespaced_ingress(namespace, label_selector=selector).items:
        names, _ = ssh_of(ing.metadata.labels[model.LABEL_RUN])
        for rule in ing.spec.rules or []:
            for path in rule.http.paths:
                if path.backend.service.port.name in names:
                    out.append(f"Ingress {ing.metadata.name} routes to {path.backend.service.port.name}")
        ann = ing.metadata.annotations or {}
        for key in (render.ANN_OWNER, render.ANN_USERS, render.ANN_GROUPS):
            bad = [p for p in (ann.get(key) or "").split(",") if p and not is_valid_principal(p)]
            if bad:
                out.append(f"Ingress {ing.metadata.name} {key} carries {bad!r}")
    for pol in net.list_namespaced_network_policy(namespace, label_selector=selector).items:
        names, ports = ssh_of(pol.metadata.labels[model.LABEL_RUN])
        for rule in pol.spec.ingress or []:
            if any(peer.namespace_selector is not None for peer in rule._from or []):
                out += [f"NetworkPolicy {pol.metadata.name} lets the ingress namespace reach {p.port}"
                        for p in rule.ports or [] if p.port in ports or p.port in names]
    return out


# --- the test --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_ns(cluster, operator):
    core = kubernetes.client.CoreV1Api(cluster.client())
    core.create_namespace({"metadata": {"name": "fuzz", "labels": {"toolshare.dev/test": "true"}}})
    yield "fuzz"
    core.delete_namespace("fuzz")


def test_fuzzed_runs_and_shares(cluster, operator, fuzz_ns):
    client = cluster.client()
    ts = Toolshare(client, fuzz_ns)
    log_offset = operator.log_path.stat().st_size
    outcomes = {"run stored": 0, "run refused": 0, "share stored": 0, "share refused": 0}
    started = time.monotonic()

    @FUZZ
    @given(run=run_spec, share=share_spec)
    def example(run, share):
        serial = next(SERIAL)
        body = build_run(run, serial)
        refusal = refused_clearly(ts, body)
        key = "run refused" if refusal is not None else "run stored"
        outcomes[key] += 1
        event(key)
        share_body = build_share(share, serial, body["metadata"]["name"])
        refusal = refused_clearly(ts, share_body)
        key = "share refused" if refusal is not None else "share stored"
        outcomes[key] += 1
        event(key)
        converged(client, fuzz_ns, timeout=30)
        assert ssh_and_annotation_violations(client, fuzz_ns) == []
        assert operator.proc.poll() is None, "the operator died"

    example()
    fuzz_s = time.monotonic() - started
    # Both sides of every decision were exercised.
    assert all(outcomes.values()), outcomes

    # Not crashed, not wedged: alive, no handler traceback, and a new run is served promptly.
    assert operator.proc.poll() is None
    assert "Traceback" not in operator.log_path.read_text(errors="replace")[log_offset:]
    canary_started = time.monotonic()
    ts.create(toolrun("canary"))
    wait_for(lambda: (ts.condition("toolruns", "canary") or {}).get("status") == "True", timeout=15,
             what="the canary run Ready after the fuzz")
    print(f"fuzz: {outcomes} in {fuzz_s:.1f}s; canary Ready in {time.monotonic() - canary_started:.2f}s")
