"""Gateway API routing (TOOLSHARE_ROUTING=gateway): the HTTPRoute and its auth objects per flavour,
then the render invariants (SSH never routed, hostile principals never in an annotation) over
generated runs and shares, and the Ingress output left exactly as it was."""

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, strategies as st

from toolshare import access, model, render
from toolshare.principals import is_dns_label, is_valid_principal
from toolshare.settings import Settings
from tests.unit.test_render import (GOOD_PRINCIPALS, check_deterministic, HOSTILE_PRINCIPALS, NOW, PROPERTY, _closed_ports, _ssh_names,
                                    by_kind, run_, run_strategy, share_, share_strategy, two_endpoint_run)

GATE = {"group": "", "kind": "Service", "name": "toolshare-gate", "namespace": "toolshare-system", "port": 8080}
RESPONSE_HEADERS = ["X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Groups", "Authorization", "Cookie"]
LABELS = {"app.kubernetes.io/managed-by": "toolshare", "toolshare.dev/run": "nb"}
CORPUS = [e["value"] * e.get("repeat", 1)
          for e in yaml.safe_load((Path(__file__).parents[1] / "data" / "hostile_principals.yaml").read_text())]
HOSTILE_RUNS = yaml.safe_load((Path(__file__).parents[1] / "data" / "hostile_runs.yaml").read_text())


def gateway(auth="external-auth", **kw):
    return Settings(routing="gateway", gateway="gateways/public", gateway_auth=auth, **kw)


FLAVOURS = ["external-auth", "traefik", "envoy-gateway"]
SHARES = [share_("a", users=["bob", "bob@example.org"], groups=["lab:bio"]),
          share_("b", users=["carol"], endpoints=["tb"])]


def route_of(children, endpoint):
    return next(c for c in by_kind(children, "HTTPRoute") if c["metadata"]["labels"]["toolshare.dev/endpoint"] == endpoint)


# --- the shapes ------------------------------------------------------------------------------


def test_external_auth_route():
    jupyter, tb = render.render_routes(two_endpoint_run(), SHARES, gateway(gateway_section="https"), NOW)
    assert jupyter == {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "nb.jupyter", "namespace": "ns",
                     "labels": {**LABELS, "toolshare.dev/endpoint": "jupyter"},
                     "annotations": {"toolshare.dev/allowed-groups": "lab:bio",
                                     "toolshare.dev/allowed-users": "bob,bob@example.org",
                                     "toolshare.dev/owner": "alice"}},
        "spec": {
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "gateways",
                            "name": "public", "sectionName": "https"}],
            "hostnames": ["nb-ns.toolshare.localhost"],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "filters": [{"type": "ExternalAuth", "externalAuth": {
                    "protocol": "HTTP", "backendRef": GATE,
                    "http": {"path": "/check/ns/nb/jupyter", "allowedHeaders": ["Cookie"],
                             "allowedResponseHeaders": RESPONSE_HEADERS}}}],
                "backendRefs": [{"group": "", "kind": "Service", "name": "nb", "port": 8888}],
            }],
        },
    }
    assert tb["metadata"]["annotations"]["toolshare.dev/allowed-users"] == "bob,bob@example.org,carol"
    rule = tb["spec"]["rules"][0]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/tb"}}]
    assert rule["filters"][0]["externalAuth"]["http"]["path"] == "/check/ns/nb/tb"
    assert rule["backendRefs"] == [{"group": "", "kind": "Service", "name": "nb", "port": 6006}]


def test_traefik_middleware_per_endpoint_before_the_routes():
    children = render.render_routes(two_endpoint_run(), SHARES, gateway("traefik"), NOW)
    assert [c["kind"] for c in children] == ["Middleware", "Middleware", "HTTPRoute", "HTTPRoute"]
    jupyter_mw = children[0]
    assert jupyter_mw == {
        "apiVersion": "traefik.io/v1alpha1", "kind": "Middleware",
        "metadata": {"name": model.middleware_name("ns", "nb", "jupyter"), "namespace": "ns",
                     "labels": {**LABELS, "toolshare.dev/endpoint": "jupyter"}},
        "spec": {"forwardAuth": {
            "address": "http://toolshare-gate.toolshare-system.svc.cluster.local:8080/check/ns/nb/jupyter",
            "authResponseHeaders": RESPONSE_HEADERS}},
    }
    route = route_of(children, "jupyter")
    assert route["spec"]["rules"][0]["filters"] == [{"type": "ExtensionRef", "extensionRef": {
        "group": "traefik.io", "kind": "Middleware", "name": jupyter_mw["metadata"]["name"]}}]
    assert "sectionName" not in route["spec"]["parentRefs"][0]
    assert route_of(children, "tb")["spec"]["rules"][0]["filters"][0]["extensionRef"]["name"] == \
        children[1]["metadata"]["name"] == model.middleware_name("ns", "nb", "tb")


def test_traefik_calls_any_gate_url_as_written():
    s = gateway("traefik", gate_url="http://127.0.0.1:8181/gate")
    (mw, _route) = render.render_routes(run_(), [], s, NOW)
    assert mw["spec"]["forwardAuth"]["address"] == "http://127.0.0.1:8181/gate/check/ns/nb/jupyter"


def test_envoy_gateway_security_policy_per_route_before_the_routes():
    children = render.render_routes(two_endpoint_run(), SHARES, gateway("envoy-gateway"), NOW)
    assert [(c["kind"], c["metadata"]["name"]) for c in children] == [
        ("SecurityPolicy", "nb.jupyter"), ("SecurityPolicy", "nb.tb"), ("HTTPRoute", "nb.jupyter"), ("HTTPRoute", "nb.tb")]
    assert children[0] == {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "SecurityPolicy",
        "metadata": {"name": "nb.jupyter", "namespace": "ns", "labels": {**LABELS, "toolshare.dev/endpoint": "jupyter"}},
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "nb.jupyter"}],
            "extAuth": {"headersToExtAuth": ["Cookie"],
                        "http": {"backendRefs": [GATE], "pathOverride": "/check/ns/nb/jupyter",
                                 "headersToBackend": RESPONSE_HEADERS}},
        },
    }
    route = route_of(children, "jupyter")
    assert "filters" not in route["spec"]["rules"][0]  # the policy attaches itself
    assert route["metadata"]["annotations"]["toolshare.dev/allowed-groups"] == "lab:bio"


@pytest.mark.parametrize("auth", ["external-auth", "envoy-gateway"])
def test_the_gate_service_comes_from_the_gate_url(auth):
    s = gateway(auth, gate_url="https://gate.auth.svc/prefix")
    children = render.render_routes(run_(), [], s, NOW)
    text = json.dumps(children)
    assert '"name": "gate", "namespace": "auth", "port": 443' in text
    assert "/prefix/check/ns/nb/jupyter" in text


def test_companions_carry_no_access_list_so_a_share_change_rewrites_routes_only():
    for auth in ("traefik", "envoy-gateway"):
        before = render.render_routes(two_endpoint_run(), [], gateway(auth), NOW)
        after = render.render_routes(two_endpoint_run(), SHARES, gateway(auth), NOW)
        assert [c for c in before if c["kind"] != "HTTPRoute"] == [c for c in after if c["kind"] != "HTTPRoute"]
        assert [c for c in before if c["kind"] == "HTTPRoute"] != [c for c in after if c["kind"] == "HTTPRoute"]
        for c in after:
            if c["kind"] != "HTTPRoute":
                assert "annotations" not in c["metadata"]


@pytest.mark.parametrize("auth", FLAVOURS)
def test_render_children_in_gateway_mode(auth):
    children = render.render_children(two_endpoint_run(), SHARES, gateway(auth), NOW)
    kinds = [c["kind"] for c in children]
    assert kinds[:2] == ["Pod", "Service"] and kinds[-1] == "NetworkPolicy"
    assert "Ingress" not in kinds and kinds.count("HTTPRoute") == 2
    companion = {"external-auth": None, "traefik": "Middleware", "envoy-gateway": "SecurityPolicy"}[auth]
    assert kinds.count(companion) == (2 if companion else 0)
    # Every auth object before the first route that needs it.
    assert all(i < kinds.index("HTTPRoute") for i, k in enumerate(kinds) if k == companion)
    for child in children:
        assert child["metadata"]["namespace"] == "ns" and "ownerReferences" not in child["metadata"]


def test_no_http_endpoint_no_route():
    run = run_(endpoints=[{"name": "ssh", "port": 22, "protocol": "ssh"}])
    for auth in FLAVOURS:
        assert render.render_routes(run, [share_()], gateway(auth), NOW) == []


def test_the_route_answers_on_the_ingress_host():
    for run in (run_(), run_(friendlyName="lab"), run_(name="r" * 63, namespace="n" * 63)):
        (route,) = by_kind(render.render_routes(run, [], gateway(), NOW), "HTTPRoute")
        assert route["spec"]["hostnames"] == [model.host_for(run, gateway())]
        assert route["spec"]["hostnames"] == [render.render_ingresses(run, [], Settings(), NOW)[0]["spec"]["rules"][0]["host"]]


def test_route_carries_the_ingress_labels_and_access_annotations():
    for auth in FLAVOURS:
        routes = by_kind(render.render_routes(two_endpoint_run(), SHARES, gateway(auth), NOW), "HTTPRoute")
        ingresses = render.render_ingresses(two_endpoint_run(), SHARES, Settings(), NOW)
        for route, ing in zip(routes, ingresses, strict=True):
            assert route["metadata"]["name"] == ing["metadata"]["name"]
            assert route["metadata"]["labels"] == ing["metadata"]["labels"]
            assert route["metadata"]["annotations"] == {k: v for k, v in ing["metadata"]["annotations"].items()
                                                        if k.startswith("toolshare.dev/")}


# --- names ------------------------------------------------------------------------------------


def _traefik_normalize(name):
    """Traefik v3.6's provider.Normalize: runs of anything but letters and digits become one '-'."""
    return "-".join(t for t in re.split(r"[^0-9A-Za-z]+", name) if t)


@pytest.mark.parametrize("namespace,run,endpoint", [
    ("ns", "nb", "jupyter"), ("ns", "a--b", "lab"), ("n" * 63, "r" * 63, "e" * 15), ("a-b", "c", "lab")])
def test_middleware_names_survive_traefiks_normalisation(namespace, run, endpoint):
    name = model.middleware_name(namespace, run, endpoint)
    assert _traefik_normalize(name) == name  # the ExtensionRef looks it up unnormalised
    assert _traefik_normalize(f"{namespace}-{name}") == f"{namespace}-{name}"
    assert is_dns_label(name) and re.sub("-+", "-", f"{run}-{endpoint}").startswith(name[:-11].rstrip("-"))


def test_middleware_names_keep_apart_what_traefik_would_merge():
    # Same namespace: "<run>-<endpoint>" would collide; across namespaces Traefik's id is "<ns>-<name>".
    pairs = [(("ns", "a-b", "c"), ("ns", "a", "b-c")), (("ns", "a--b", "c"), ("ns", "a-b", "c")),
             (("a-b", "c", "lab"), ("a", "b-c", "lab"))]
    for one, other in pairs:
        ids = {f"{ns}-{model.middleware_name(ns, r, e)}" for ns, r, e in (one, other)}
        assert len(ids) == 2


# --- invariants over generated runs and shares (mirroring tests/unit/test_render.py) ------------

GATEWAY_SETTINGS = [gateway(auth, **extra) for auth in FLAVOURS
                    for extra in ({}, {"gateway_section": "web", "owner_access_selector": "toolshare.dev/ssh-access=true"})]


@st.composite
def gateway_scenario(draw):
    runs = draw(st.lists(run_strategy, min_size=1, max_size=3, unique_by=lambda x: x["metadata"]["name"]))
    shares = draw(st.lists(share_strategy([x["metadata"]["name"] for x in runs]), max_size=6))
    return runs, shares, draw(st.sampled_from(GATEWAY_SETTINGS))


def _strings(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


@PROPERTY
@given(gateway_scenario())
def test_ssh_is_never_routed(case):
    runs, shares, settings = case
    runs_by_name = {x["metadata"]["name"]: x for x in runs}
    for run in runs:
        children = render.render_children(run, shares, settings, NOW, runs_by_name)
        closed, ssh_names = _closed_ports(run), _ssh_names(run)
        assert not by_kind(children, "Ingress")
        services = by_kind(children, "Service")
        service_ports = {p["port"]: p["name"] for svc in services for p in svc["spec"]["ports"]}
        routes = by_kind(children, "HTTPRoute")
        assert len(routes) == len(model.http_endpoints(run))
        for route in routes:
            endpoint = route["metadata"]["labels"]["toolshare.dev/endpoint"]
            assert endpoint not in ssh_names
            (rule,) = route["spec"]["rules"]
            (backend,) = rule["backendRefs"]
            assert backend["name"] == model.service_name(run["metadata"]["name"])
            assert backend["port"] not in closed and service_ports[backend["port"]] == endpoint
        for child in children:
            if child["kind"] in ("HTTPRoute", "Middleware", "SecurityPolicy"):
                check = [s for s in _strings(child["spec"]) if "/check/" in s]
                assert all(s.endswith("/" + child["metadata"]["labels"]["toolshare.dev/endpoint"]) for s in check)
                assert child["metadata"]["labels"]["toolshare.dev/endpoint"] not in ssh_names


@PROPERTY
@given(gateway_scenario())
def test_every_principal_in_a_route_matches_the_grammar(case):
    runs, shares, settings = case
    runs_by_name = {x["metadata"]["name"]: x for x in runs}
    for run in runs:
        acls = access.access_for(run, shares, NOW, runs_by_name)
        for child in render.render_routes(run, shares, settings, NOW, runs_by_name):
            ann = child["metadata"].get("annotations")
            if child["kind"] != "HTTPRoute":
                assert ann is None
                continue
            endpoint = child["metadata"]["labels"]["toolshare.dev/endpoint"]
            for key, expected in (("toolshare.dev/owner", [run["spec"]["owner"]]),
                                  ("toolshare.dev/allowed-users", list(acls[endpoint].users)),
                                  ("toolshare.dev/allowed-groups", list(acls[endpoint].groups))):
                names = [n for n in ann[key].split(",") if n]
                assert names == expected and all(is_valid_principal(n) for n in names)
                assert names == sorted(set(names))
            for value in ann.values():
                assert not any(c in value for c in " \t\n\"'\\;{}")


@PROPERTY
@given(gateway_scenario(), st.randoms(use_true_random=False))
def test_gateway_rendering_is_deterministic(case, rnd):
    check_deterministic(case, rnd)


@PROPERTY
@given(gateway_scenario())
def test_gateway_names_are_valid(case):
    runs, shares, settings = case
    for run in runs:
        for child in render.render_children(run, shares, settings, NOW):
            name = child["metadata"]["name"]
            assert len(name) <= 253 and all(is_dns_label(part) for part in name.split("."))
            if child["kind"] == "Middleware":
                assert _traefik_normalize(name) == name


# --- hostile input ------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", FLAVOURS)
def test_hostile_principals_never_reach_a_route(auth):
    hostile = [h for h in HOSTILE_PRINCIPALS + CORPUS if h]
    shares = [share_(f"s{i}", users=["bob", h]) for i, h in enumerate(hostile)]
    shares += [share_(f"g{i}", users=[], groups=["lab", h]) for i, h in enumerate(hostile)]
    shares += [share_("ok", users=["carol"], groups=["lab:bio"])]
    children = render.render_children(two_endpoint_run(), shares, gateway(auth), NOW)
    text = json.dumps(children)
    for h in hostile:
        if len(h) > 3:  # shorter ones ("-x", "é") say nothing as substrings
            assert json.dumps(h)[1:-1] not in text
    for child in children:
        for value in (child["metadata"].get("annotations") or {}).values():
            assert not set(value.split(",")) & set(hostile)
            assert not re.search(r"[\s\"'`\\;{}<>|^$]|[^\x21-\x7e]", value)
    for route in by_kind(children, "HTTPRoute"):
        ann = route["metadata"]["annotations"]
        assert ann["toolshare.dev/allowed-users"] == "carol"  # bob only came with hostile company
        assert ann["toolshare.dev/allowed-groups"] == "lab:bio"


@pytest.mark.parametrize("entry", [e for e in HOSTILE_RUNS if e["field"] == "path"], ids=lambda e: e["value"])
def test_hostile_paths_get_no_route(entry):
    run = run_(endpoints=[{"name": "web", "port": 8080, "protocol": "http", "path": entry["value"]},
                          {"name": "ok", "port": 8081, "protocol": "http", "path": "/ok"}])
    for auth in FLAVOURS:
        children = render.render_children(run, [share_()], gateway(auth), NOW)
        assert entry["value"] not in json.dumps(children)
        assert {r["metadata"]["name"] for r in by_kind(children, "HTTPRoute")} == {"nb.ok"}


# --- settings reach the rendering ----------------------------------------------------------


def test_gateway_mode_without_a_usable_gate_service_is_refused_before_rendering():
    from toolshare.settings import SettingsError
    with pytest.raises(SettingsError, match="TOOLSHARE_GATE_URL"):
        gateway("envoy-gateway", gate_url="http://127.0.0.1:8080")


# --- the Ingress output is unchanged ----------------------------------------------------------

# The digest of what render_children returned, byte for byte (json.dumps keeps key order), for the
# runs, shares and settings below, before the Gateway API backend existed (commit e94cc29; since
# then only the Pod changed: restricted by default, issue 18). A deliberate change to the Ingress
# rendering changes it: recompute it then, not before.
INGRESS_GOLDEN = "7c878b9a1b7a48aa7a4f4349bc935e8860414078cb8668f77359061516ff5e07"


def _golden_inputs():
    def run(name="nb", namespace="ns", endpoints=None, **spec):
        return {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun",
                "metadata": {"name": name, "namespace": namespace, "labels": {"f": "x"}},
                "spec": {"owner": "alice", "image": "jupyter/base-notebook", "endpoints": endpoints, **spec}}
    eps = [{"name": "jupyter", "port": 8888, "protocol": "http"},
           {"name": "tb", "port": 6006, "protocol": "https", "path": "/tb"},
           {"name": "ssh", "port": 22, "protocol": "ssh"}]
    runs = [run(endpoints=eps), run(name="lab", endpoints=eps[:1], friendlyName="lab"),
            run(name="ssh-only", endpoints=eps[2:]), run(name="r" * 63, namespace="n" * 63, endpoints=eps)]
    shares = [{"apiVersion": "toolshare.dev/v1alpha1", "kind": "RunShare", "metadata": {"name": "a", "namespace": "ns"},
               "spec": {"runRef": {"name": "nb"}, "users": ["bob", "carol@example.org"], "groups": ["lab:bio"]}},
              {"apiVersion": "toolshare.dev/v1alpha1", "kind": "RunShare", "metadata": {"name": "b", "namespace": "ns"},
               "spec": {"runSelector": {"matchLabels": {"f": "x"}}, "users": ["dave"], "endpoints": ["tb"]}}]
    settings = [dict(), dict(tls_cluster_issuer="le", ingress_class="public", ingress_namespace="ing",
                             owner_access_selector="toolshare.dev/ssh-access=true"),
                dict(tls_secret="wild", gate_url="https://gate.example.org/api", signin_url="https://sso.example.org/start")]
    return runs, shares, settings


def _ingress_digest(extra):
    runs, shares, settings = _golden_inputs()
    runs_by_name = {x["metadata"]["name"]: x for x in runs}
    out = json.dumps([render.render_children(r, shares, Settings(**s, **extra), NOW, runs_by_name)
                      for s in settings for r in runs])
    return hashlib.sha256(out.encode()).hexdigest()


def test_ingress_output_is_byte_identical_to_before():
    assert _ingress_digest({}) == INGRESS_GOLDEN
    assert _ingress_digest({"routing": "ingress"}) == INGRESS_GOLDEN


def test_gateway_settings_are_ignored_in_ingress_mode():
    extra = {"routing": "ingress", "gateway": "gateways/public", "gateway_section": "web", "gateway_auth": "traefik"}
    assert _ingress_digest(extra) == INGRESS_GOLDEN
    children = render.render_children(two_endpoint_run(), SHARES, Settings(**extra), NOW)
    assert [c["kind"] for c in children] == ["Pod", "Service", "Ingress", "Ingress", "NetworkPolicy"]


def test_good_principals_pass_through_unchanged():
    shares = [share_("a", users=GOOD_PRINCIPALS, groups=GOOD_PRINCIPALS)]
    (route,) = render.render_routes(run_(), shares, gateway(), NOW)
    assert route["metadata"]["annotations"]["toolshare.dev/allowed-users"] == ",".join(sorted(GOOD_PRINCIPALS))
