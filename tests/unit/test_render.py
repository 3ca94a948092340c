"""The pure renderer: examples for each rule, then properties over generated runs and shares."""

import copy
import datetime as dt

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings as hsettings, strategies as st

from toolshare import access, model, render
from toolshare.principals import is_dns_label, is_valid_principal
from toolshare.settings import Settings

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
SETTINGS = Settings()
NGINX = "nginx.ingress.kubernetes.io/"


def run_(name="nb", namespace="ns", owner="alice", endpoints=None, labels=None, **spec):
    if endpoints is None:
        endpoints = [{"name": "jupyter", "port": 8888, "protocol": "http"},
                     {"name": "ssh", "port": 22, "protocol": "ssh"}]
    return {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {"owner": owner, "image": "jupyter/base-notebook", "endpoints": endpoints, **spec}}


def share_(name="s", namespace="ns", run="nb", selector=None, users=("bob",), groups=(), **spec):
    target = {"runSelector": selector} if selector is not None else {"runRef": {"name": run}}
    body = {**target, **spec}
    if users is not None:
        body["users"] = list(users)
    if groups is not None:
        body["groups"] = list(groups)
    return {"apiVersion": "toolshare.dev/v1alpha1", "kind": "RunShare",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}


def by_kind(children, kind):
    return [c for c in children if c["kind"] == kind]


# --- endpoints ------------------------------------------------------------------------------


def test_http_endpoints_keep_http_and_https_in_spec_order():
    run = run_(endpoints=[
        {"name": "tb", "port": 6006, "protocol": "https", "path": "/tb"},
        {"name": "ssh", "port": 22, "protocol": "ssh"},
        {"name": "jupyter", "port": 8888, "protocol": "http"},
    ])
    assert model.http_endpoints(run) == [model.Endpoint("tb", 6006, "https", "/tb"),
                                     model.Endpoint("jupyter", 8888, "http", "/")]
    assert model.ssh_endpoints(run) == [model.Endpoint("ssh", 22, "ssh", "/")]


@pytest.mark.parametrize("endpoints", [
    [{"name": "web", "port": 22, "protocol": "http"}],                      # port 22 is SSH's
    [{"name": "web", "port": 2222, "protocol": "http"},                     # shares an SSH port
     {"name": "ssh", "port": 2222, "protocol": "ssh"}],
    [{"name": "web", "port": 8080, "protocol": "http"},                     # shares an unknown one's
     {"name": "x", "port": 8080, "protocol": "ftp"}],
    [{"name": "web", "port": 8080, "protocol": "http"},                     # ambiguous name
     {"name": "web", "port": 8081, "protocol": "http", "path": "/b"}],
    [{"name": "Web", "port": 8080, "protocol": "http"}],
    [{"name": "a-very-long-endpoint", "port": 8080, "protocol": "http"}],
    [{"name": "123", "port": 8080, "protocol": "http"}],
    [{"name": "web", "port": 0, "protocol": "http"}],
    [{"name": "web", "port": 70000, "protocol": "http"}],
    [{"name": "web", "port": True, "protocol": "http"}],
    [{"name": "web", "port": "8080", "protocol": "http"}],
    [{"name": "web", "port": 8080, "protocol": "HTTP"}],
    [{"name": "web", "port": 8080, "protocol": "http", "path": "/a/"}],
    [{"name": "web", "port": 8080, "protocol": "http", "path": "no-slash"}],
    [{"name": "web", "port": 8080, "protocol": "http"},                     # same host and path
     {"name": "web2", "port": 8081, "protocol": "http", "path": "/"}],
    ["not-a-mapping"],
])
def test_http_endpoints_refuse_anything_doubtful(endpoints):
    run = run_(endpoints=endpoints)
    assert model.http_endpoints(run) == []
    assert model.validate_run(run)


def test_validate_run_accepts_a_good_run_and_explains_a_bad_one():
    assert model.validate_run(run_()) == []
    problems = model.validate_run(run_(name="1nb", owner="a b", friendlyName="X", endpoints=[
        {"name": "web", "port": 22, "protocol": "http"}, {"name": "web", "port": 22, "protocol": "ssh"}]))
    text = "\n".join(problems)
    for part in ("DNS-1035", "spec.owner", "friendlyName", "port 22 is reserved", "names must be unique",
                 "ports must be unique"):
        assert part in text


# --- names and hosts ------------------------------------------------------------------------


def test_hosts():
    assert model.host_for(run_(), SETTINGS) == "nb-ns.toolshare.localhost"
    assert model.host_for(run_(friendlyName="lab"), SETTINGS) == "lab.toolshare.localhost"
    assert model.host_for(run_(friendlyName="Not Valid"), SETTINGS) == "nb-ns.toolshare.localhost"
    other = Settings(base_domain="tools.example.org")
    assert model.host_for(run_(), other) == "nb-ns.tools.example.org"


def test_long_derived_hosts_are_cut_deterministically_and_stay_distinct():
    a = run_(name="n" * 63, namespace="a" * 63)
    b = run_(name="n" * 63, namespace="a" * 62 + "b")
    ha, hb = model.host_for(a, SETTINGS), model.host_for(b, SETTINGS)
    assert ha == model.host_for(copy.deepcopy(a), SETTINGS)
    assert ha != hb
    for host in (ha, hb):
        label = host.split(".")[0]
        assert is_dns_label(label) and len(label) <= 63


def test_child_names():
    assert model.service_name("nb") == "nb"
    assert model.ingress_name("nb", "jupyter") == "nb.jupyter"
    # "<run>-<endpoint>" would collide here; the dot cannot occur in either name.
    assert model.ingress_name("a-b", "c") != model.ingress_name("a", "b-c")
    assert len(model.ingress_name("r" * 63, "e" * 15)) <= 253


# --- which runs a share applies to ----------------------------------------------------------


def test_run_ref():
    assert model.share_applies_to(share_(run="nb"), run_())
    assert not model.share_applies_to(share_(run="other"), run_())
    assert not model.share_applies_to(share_(namespace="elsewhere"), run_())


@pytest.mark.parametrize("selector,labels,expected", [
    ({"matchLabels": {"f": "a"}}, {"f": "a"}, True),
    ({"matchLabels": {"f": "a"}}, {"f": "b"}, False),
    ({"matchLabels": {"f": "a"}}, {}, False),
    ({"matchLabels": {"f": "a", "g": "b"}}, {"f": "a"}, False),
    ({"matchExpressions": [{"key": "f", "operator": "In", "values": ["a", "b"]}]}, {"f": "b"}, True),
    ({"matchExpressions": [{"key": "f", "operator": "In", "values": ["a"]}]}, {}, False),
    ({"matchExpressions": [{"key": "f", "operator": "NotIn", "values": ["a"]}]}, {"f": "b"}, True),
    ({"matchExpressions": [{"key": "f", "operator": "NotIn", "values": ["a"]}]}, {}, True),
    ({"matchExpressions": [{"key": "f", "operator": "NotIn", "values": ["a"]}]}, {"f": "a"}, False),
    ({"matchExpressions": [{"key": "f", "operator": "Exists"}]}, {"f": ""}, True),
    ({"matchExpressions": [{"key": "f", "operator": "Exists"}]}, {"g": "x"}, False),
    ({"matchExpressions": [{"key": "f", "operator": "DoesNotExist"}]}, {"g": "x"}, True),
    ({"matchExpressions": [{"key": "f", "operator": "DoesNotExist"}]}, {"f": "x"}, False),
    ({"matchLabels": {"f": "a"}, "matchExpressions": [{"key": "g", "operator": "Exists"}]},
     {"f": "a", "g": "1"}, True),
    ({"matchLabels": {"f": "a"}, "matchExpressions": [{"key": "g", "operator": "Exists"}]},
     {"f": "a"}, False),
    # Malformed or empty selectors apply to nothing (an empty one must not share every run).
    ({}, {"f": "a"}, False),
    ({"matchLabels": {}}, {"f": "a"}, False),
    ({"matchExpressions": [{"key": "f", "operator": "In"}]}, {"f": "a"}, False),
    ({"matchExpressions": [{"key": "f", "operator": "Exists", "values": ["a"]}]}, {"f": "a"}, False),
    ({"matchExpressions": [{"key": "f", "operator": "Like", "values": ["a"]}]}, {"f": "a"}, False),
    ({"matchLabels": {"bad key!": "a"}}, {"bad key!": "a"}, False),
])
def test_run_selector(selector, labels, expected):
    assert model.share_applies_to(share_(selector=selector), run_(labels=labels)) is expected


def test_share_with_both_or_neither_target_applies_to_nothing():
    both = share_()
    both["spec"]["runSelector"] = {"matchLabels": {"f": "a"}}
    neither = share_()
    del neither["spec"]["runRef"]
    assert not model.share_applies_to(both, run_(labels={"f": "a"}))
    assert not model.share_applies_to(neither, run_())


# --- share state ----------------------------------------------------------------------------


def test_active():
    state = access.share_state(share_(), {"nb": run_()}, NOW)
    assert state == access.ShareState("Active", "shared on nb", ("nb",))


def test_run_not_found():
    assert access.share_state(share_(run="gone"), {"nb": run_()}, NOW).reason == "RunNotFound"
    assert "gone" in access.share_state(share_(run="gone"), {}, NOW).message
    sel = share_(selector={"matchLabels": {"f": "x"}})
    assert access.share_state(sel, {"nb": run_()}, NOW).reason == "RunNotFound"


def test_expired_at_and_after_the_instant():
    assert access.share_state(share_(expiresAt="2030-01-01T12:00:00Z"), {"nb": run_()}, NOW).reason == "Expired"
    assert access.share_state(share_(expiresAt="2029-12-31T00:00:00Z"), {"nb": run_()}, NOW).reason == "Expired"
    late = access.share_state(share_(expiresAt="2030-01-01T12:00:01Z"), {"nb": run_()}, NOW)
    assert late.reason == "Active"


def test_expiry_respects_offsets_and_naive_now():
    share = share_(expiresAt="2030-01-01T13:30:00+01:00")  # 12:30Z
    assert access.share_state(share, {"nb": run_()}, NOW).reason == "Active"
    assert access.share_state(share, {"nb": run_()}, NOW.replace(tzinfo=None, hour=13)).reason == "Expired"


@pytest.mark.parametrize("share,fragment", [
    (share_(users=["bob smith"]), "principal grammar"),
    (share_(users=[], groups=["a,b"]), "principal grammar"),
    (share_(users=["ok"], groups=["$(rm -rf)"]), "principal grammar"),
    (share_(users=[], groups=[]), "at least one"),
    (share_(users=None, groups=None), "at least one"),
    (share_(users=[f"u{i}" for i in range(200)], groups=[f"g{i}" for i in range(57)]), "at most 256"),
    (share_(endpoints=["ssh"]), "SSH is never shared"),
    (share_(endpoints=["nope"]), "no matched ToolRun has an endpoint"),
    (share_(endpoints=["Bad Name"]), "endpoint names"),
    (share_(expiresAt="tomorrow"), "RFC 3339"),
    (share_(run="1bad"), "runRef.name"),
    (share_(selector={}), "must not be empty"),
    ({"metadata": {"name": "s", "namespace": "ns"}}, "spec is missing"),
])
def test_invalid(share, fragment):
    state = access.share_state(share, {"nb": run_()}, NOW)
    assert state.reason == "Invalid" and state.runs == ()
    assert fragment in state.message


def test_exactly_256_principals_are_fine():
    share = share_(users=[f"u{i}" for i in range(200)], groups=[f"g{i}" for i in range(56)])
    assert access.share_state(share, {"nb": run_()}, NOW).reason == "Active"


def test_http_endpoint_on_port_22_is_not_shareable_either():
    run = run_(endpoints=[{"name": "web", "port": 22, "protocol": "http"}])
    assert access.share_state(share_(endpoints=["web"]), {"nb": run}, NOW).reason == "Invalid"


def test_formation_endpoint_needs_to_exist_on_one_run_only():
    a = run_(name="a", labels={"f": "x"}, endpoints=[{"name": "jupyter", "port": 8888, "protocol": "http"},
                                                     {"name": "tb", "port": 6006, "protocol": "http",
                                                      "path": "/tb"}])
    b = run_(name="b", labels={"f": "x"}, endpoints=[{"name": "jupyter", "port": 8888, "protocol": "http"}])
    share = share_(selector={"matchLabels": {"f": "x"}}, endpoints=["tb"])
    runs = {"a": a, "b": b}
    assert access.share_state(share, runs, NOW) == access.ShareState("Active", "shared on a, b", ("a", "b"))
    assert access.access_for(b, [share], NOW, runs) == {"jupyter": access.Access((), ())}
    assert access.access_for(a, [share], NOW, runs)["tb"] == access.Access(("bob",), ())


def test_formation_naming_an_ssh_endpoint_of_any_member_is_invalid_everywhere():
    a = run_(name="a", labels={"f": "x"}, endpoints=[{"name": "shell", "port": 8080, "protocol": "http"}])
    b = run_(name="b", labels={"f": "x"}, endpoints=[{"name": "shell", "port": 22, "protocol": "ssh"}])
    share = share_(selector={"matchLabels": {"f": "x"}}, endpoints=["shell"])
    runs = {"a": a, "b": b}
    assert access.share_state(share, runs, NOW).reason == "Invalid"
    assert access.access_for(a, [share], NOW, runs) == {"shell": access.Access((), ())}


def test_long_formations_have_short_messages():
    runs = {f"r{i}": run_(name=f"r{i}", labels={"f": "x"}) for i in range(40)}
    state = access.share_state(share_(selector={"matchLabels": {"f": "x"}}), runs, NOW)
    assert state.reason == "Active" and len(state.runs) == 40
    assert "and 30 more" in state.message
    assert render.share_status(state) == {"runs": sorted(runs)}


# --- access ---------------------------------------------------------------------------------


def two_endpoint_run():
    return run_(endpoints=[{"name": "jupyter", "port": 8888, "protocol": "http"},
                           {"name": "tb", "port": 6006, "protocol": "https", "path": "/tb"},
                           {"name": "ssh", "port": 22, "protocol": "ssh"}])


def test_access_is_the_union_of_active_shares_per_endpoint():
    run = two_endpoint_run()
    shares = [
        share_("a", users=["carol", "bob"]),
        share_("b", users=[], groups=["lab"]),
        share_("c", users=["dave"], endpoints=["tb"]),
        share_("d", users=["eve"], expiresAt="2000-01-01T00:00:00Z"),      # expired
        share_("e", users=["mallory", "x y"]),                              # invalid
        share_("f", users=["trent"], endpoints=["ssh"]),                    # invalid: SSH
        share_("g", run="other", users=["oscar"]),                          # another run
        share_("h", namespace="other", users=["peggy"]),                    # another namespace
    ]
    assert access.access_for(run, shares, NOW) == {
        "jupyter": access.Access(("bob", "carol"), ("lab",)),
        "tb": access.Access(("bob", "carol", "dave"), ("lab",)),
    }
    status = render.run_status(run, shares, SETTINGS, NOW)
    assert status == {
        "urls": [{"endpoint": "jupyter", "url": "http://nb-ns.toolshare.localhost/"},
                 {"endpoint": "tb", "url": "http://nb-ns.toolshare.localhost/tb"}],
        "sharedWith": {"users": ["bob", "carol", "dave"], "groups": ["lab"],
                       "summary": "bob, carol, dave, group:lab"},
    }


def test_no_shares_no_access_but_the_owner():
    granted = access.access_for(run_(), [], NOW)
    assert granted == {"jupyter": access.Access((), ())}
    assert access.is_allowed("alice", granted["jupyter"], "alice", [])
    assert not access.is_allowed("alice", granted["jupyter"], "bob", ["lab"])


def test_is_allowed_is_an_or():
    acl = access.Access(("bob",), ("lab",))
    assert access.is_allowed("alice", acl, "alice", [])
    assert access.is_allowed("alice", acl, "bob", [])
    assert access.is_allowed("alice", acl, "carol", ["x", "lab"])
    assert not access.is_allowed("alice", acl, "carol", ["x"])


def test_summary_is_bounded():
    acls = {"e": access.Access(tuple(f"user-{i:03}" for i in range(100)), ("lab",))}
    summary = render.shared_with(acls)["summary"]
    assert len(summary) < 150 and summary.endswith("more)")


def test_next_expiry():
    shares = [share_(expiresAt="2030-01-02T00:00:00Z"), share_(expiresAt="2030-01-01T13:00:00Z"),
              share_(expiresAt="2000-01-01T00:00:00Z"), share_(),
              share_(users=["bad user"], expiresAt="2030-01-01T12:30:00Z")]
    assert access.next_expiry(shares, NOW) == dt.datetime(2030, 1, 1, 13, tzinfo=dt.timezone.utc)
    assert access.next_expiry([share_()], NOW) is None


# --- children -------------------------------------------------------------------------------


def test_children_in_fixed_order_with_labels_and_no_owner_references():
    children = render.render_children(two_endpoint_run(), [share_()], SETTINGS, NOW)
    assert [(c["kind"], c["metadata"]["name"]) for c in children] == [
        ("Pod", "nb"), ("Service", "nb"), ("Ingress", "nb.jupyter"), ("Ingress", "nb.tb"),
        ("NetworkPolicy", "nb")]
    for child in children:
        meta = child["metadata"]
        assert meta["namespace"] == "ns"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "toolshare"
        assert meta["labels"]["toolshare.dev/run"] == "nb"
        assert "ownerReferences" not in meta
    assert [i["metadata"]["labels"]["toolshare.dev/endpoint"] for i in by_kind(children, "Ingress")] == [
        "jupyter", "tb"]


def test_pod():
    run = two_endpoint_run()
    run["spec"].update(command=["start.sh"], args=["--port", "8888"],
                       env=[{"name": "A", "value": "1"}, {"name": "B"}],
                       resources={"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}})
    pod = render.render_pod(run)
    assert pod["apiVersion"] == "v1" and pod["kind"] == "Pod"
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    # Restricted by default; SSH on 22 is bound by the non-root tool through the namespaced sysctl.
    assert spec["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
        "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "22"}]}
    (container,) = spec["containers"]
    assert container == {
        "name": "tool", "image": "jupyter/base-notebook", "command": ["start.sh"],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "args": ["--port", "8888"], "env": [{"name": "A", "value": "1"}, {"name": "B", "value": ""}],
        "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}},
        "ports": [{"name": "jupyter", "containerPort": 8888, "protocol": "TCP"},
                  {"name": "ssh", "containerPort": 22, "protocol": "TCP"},
                  {"name": "tb", "containerPort": 6006, "protocol": "TCP"}],
        # Ready once the first HTTP endpoint answers (ToolReady and Service endpoints wait for it).
        "readinessProbe": {"tcpSocket": {"port": 8888}, "periodSeconds": 5, "timeoutSeconds": 2,
                           "successThreshold": 1, "failureThreshold": 3},
    }


def test_service_has_http_ports_only_by_name():
    svc = render.render_service(two_endpoint_run())
    assert svc["spec"]["selector"] == {"app.kubernetes.io/managed-by": "toolshare", "toolshare.dev/run": "nb"}
    assert svc["spec"]["ports"] == [
        {"name": "jupyter", "port": 8888, "targetPort": "jupyter", "protocol": "TCP", "appProtocol": "http"},
        {"name": "tb", "port": 6006, "targetPort": "tb", "protocol": "TCP", "appProtocol": "https"}]
    assert render.render_service(run_(endpoints=[{"name": "ssh", "port": 22, "protocol": "ssh"}])) is None


def test_ingress():
    shares = [share_("a", users=["bob", "bob@example.org"], groups=["lab:bio"]),
              share_("b", users=["carol"], endpoints=["tb"])]
    jupyter, tb = render.render_ingresses(two_endpoint_run(), shares, SETTINGS, NOW)
    assert jupyter["apiVersion"] == "networking.k8s.io/v1"
    assert jupyter["metadata"]["annotations"] == {
        NGINX + "auth-url": "http://toolshare-gate.toolshare-system.svc.cluster.local:8080/check/ns/nb/jupyter",
        NGINX + "auth-signin": "https://auth.toolshare.localhost/oauth2/start?rd=$scheme://$host$escaped_request_uri",
        NGINX + "auth-response-headers": "X-Auth-Request-User,X-Auth-Request-Email,X-Auth-Request-Groups,Authorization,Cookie",
        "toolshare.dev/owner": "alice",
        "toolshare.dev/allowed-users": "bob,bob@example.org",
        "toolshare.dev/allowed-groups": "lab:bio",
    }
    assert jupyter["spec"] == {
        "ingressClassName": "nginx",
        "rules": [{"host": "nb-ns.toolshare.localhost", "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "nb", "port": {"name": "jupyter"}}}}]}}],
    }
    ann = tb["metadata"]["annotations"]
    assert ann[NGINX + "backend-protocol"] == "HTTPS"
    assert ann["toolshare.dev/allowed-users"] == "bob,bob@example.org,carol"
    assert tb["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/tb"


def test_ingress_tls_with_a_secret():
    s = Settings(tls_secret="wildcard")
    for ing in render.render_ingresses(two_endpoint_run(), [], s, NOW):
        assert ing["spec"]["tls"] == [{"hosts": ["nb-ns.toolshare.localhost"], "secretName": "wildcard"}]
        assert "cert-manager.io/cluster-issuer" not in ing["metadata"]["annotations"]
    assert render.run_urls(two_endpoint_run(), s)[0]["url"] == "https://nb-ns.toolshare.localhost/"


def test_ingress_tls_with_cert_manager_asks_once_per_host():
    s = Settings(tls_cluster_issuer="letsencrypt", ingress_class="public")
    first, second = render.render_ingresses(two_endpoint_run(), [], s, NOW)
    assert first["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert "cert-manager.io/cluster-issuer" not in second["metadata"]["annotations"]
    assert first["spec"]["tls"] == second["spec"]["tls"] == [
        {"hosts": ["nb-ns.toolshare.localhost"], "secretName": "nb-tls"}]
    assert first["spec"]["ingressClassName"] == "public"


def test_network_policy_without_owner_access():
    np = render.render_network_policy(two_endpoint_run(), SETTINGS)
    assert np["spec"] == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "toolshare",
                                        "toolshare.dev/run": "nb"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "ingress-nginx"}}}],
            "ports": [{"port": 8888, "protocol": "TCP"}, {"port": 6006, "protocol": "TCP"}]}],
    }


def test_network_policy_with_owner_access():
    s = Settings(owner_access_selector="toolshare.dev/ssh-access=true", ingress_namespace="ingress")
    rules = render.render_network_policy(two_endpoint_run(), s)["spec"]["ingress"]
    assert rules[0]["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ingress"}
    assert rules[1] == {"from": [{"podSelector": {"matchLabels": {"toolshare.dev/ssh-access": "true"}}}],
                        "ports": [{"port": 22, "protocol": "TCP"}]}


def test_network_policy_denies_everything_when_nothing_is_exposed():
    run = run_(endpoints=[{"name": "ssh", "port": 22, "protocol": "ssh"}])
    assert "ingress" not in render.render_network_policy(run, SETTINGS)["spec"]  # no rule: deny all


@pytest.mark.parametrize("run", [
    run_(owner="alice,bob"), run_(owner="x\ny"), run_(owner=""), run_(owner=None),
    run_(name="Upper"), run_(name="1nb"), run_(name="a" * 64), run_(namespace="Bad NS"),
])
def test_an_unsafe_identity_is_never_rendered(run):
    with pytest.raises(render.RenderError):
        render.render_children(run, [], SETTINGS, NOW)


def test_hostile_principals_never_reach_an_annotation():
    hostile = ["x,admin", "a b", 'q"', "$host", "a;b", "a\nb", "{x}", "-x", "é"]
    shares = [share_(f"s{i}", users=["bob", h]) for i, h in enumerate(hostile)]
    shares += [share_("g", users=[], groups=["lab", "evil group"])]
    for ing in render.render_ingresses(run_(), shares, SETTINGS, NOW):
        ann = ing["metadata"]["annotations"]
        assert ann["toolshare.dev/allowed-users"] == ""  # bob only came with hostile company
        assert ann["toolshare.dev/allowed-groups"] == ""


def test_rendering_is_deterministic_and_share_order_does_not_matter():
    shares = [share_("a", users=["zed", "amy"]), share_("b", groups=["lab", "art"], users=None)]
    one = render.render_children(two_endpoint_run(), shares, SETTINGS, NOW)
    two = render.render_children(two_endpoint_run(), list(reversed(shares)), SETTINGS, NOW)
    assert one == two


def test_inputs_are_not_mutated():
    run, shares = two_endpoint_run(), [share_()]
    before = copy.deepcopy((run, shares))
    render.render_children(run, shares, SETTINGS, NOW)
    render.run_status(run, shares, SETTINGS, NOW)
    assert (run, shares) == before


# --- properties -----------------------------------------------------------------------------

VALID_ENDPOINT_NAMES = ["jupyter", "tb", "ssh", "web", "shell", "lab"]
ENDPOINT_NAMES = VALID_ENDPOINT_NAMES + ["Bad", "a--b", "x" * 16, "123"]
GOOD_PRINCIPALS = ["alice", "bob", "carol@example.org", "lab", "lab:bio", "org/team", "a+b", "z9"]
HOSTILE_PRINCIPALS = ["x,admin", "a b", 'q"', "$host", "a;b", "a\nb", "{x}", "-x", "é", ""]
principals = st.one_of(st.sampled_from(HOSTILE_PRINCIPALS), st.text(max_size=12))


@st.composite
def endpoint_list(draw):
    """Mostly well-formed endpoints (so children get rendered), with every kind of mistake mixed in."""
    names = draw(st.lists(st.sampled_from(VALID_ENDPOINT_NAMES), unique=True, max_size=5))
    endpoints = []
    for name in names:
        ep = {"name": name,
              "port": draw(st.one_of(st.sampled_from([22, 80, 443, 2222, 6006, 8080, 8888]),
                                     st.integers(1, 65535))),
              "protocol": draw(st.sampled_from(["http", "https", "ssh"]))}
        if draw(st.booleans()):
            ep["path"] = draw(st.sampled_from(["/", "/lab", "/tb", "/x/y", f"/{name}"]))
        endpoints.append(ep)
    if draw(st.integers(0, 3)) == 0:  # a malformed one
        endpoints.append(draw(st.fixed_dictionaries(
            {"name": st.sampled_from(ENDPOINT_NAMES),
             "port": st.sampled_from([22, 8080, 0, 70000, "8080", True, None]),
             "protocol": st.sampled_from(["http", "https", "ssh", "HTTP", "ftp", None])},
            optional={"path": st.sampled_from(["/lab/", "lab", "/a b", "/"])})))
    return draw(st.permutations(endpoints))


run_strategy = st.builds(
    lambda name, endpoints, labels, friendly: run_(
        name=name, endpoints=endpoints, labels=labels,
        **({"friendlyName": friendly} if friendly else {})),
    name=st.sampled_from(["nb", "a", "a-b", "r" * 63]),
    endpoints=endpoint_list(),
    labels=st.dictionaries(st.sampled_from(["f", "g"]), st.sampled_from(["x", "y"]), max_size=2),
    friendly=st.sampled_from([None, None, "lab", "Bad Name"]))

selector = st.one_of(
    st.builds(lambda v: {"matchLabels": {"f": v}}, st.sampled_from(["x", "y"])),
    st.builds(lambda op, vals: {"matchExpressions": [{"key": "g", "operator": op, "values": vals}]},
              st.sampled_from(["In", "NotIn"]), st.lists(st.sampled_from(["x", "y"]), min_size=1)),
    st.builds(lambda op: {"matchExpressions": [{"key": "g", "operator": op}]},
              st.sampled_from(["Exists", "DoesNotExist"])),
    st.just({}))


@st.composite
def share_strategy(draw, run_names):
    i = draw(st.integers(0, 10**6))
    good = st.sampled_from(GOOD_PRINCIPALS)
    kwargs = {"users": draw(st.lists(good, max_size=3)), "groups": draw(st.lists(good, max_size=2))}
    if draw(st.integers(0, 3)) == 0:  # a share carrying a hostile principal
        kwargs[draw(st.sampled_from(["users", "groups"]))].append(draw(principals))
    if draw(st.booleans()):
        kwargs["endpoints"] = draw(st.lists(st.sampled_from(ENDPOINT_NAMES), min_size=1, max_size=3))
    expiry = draw(st.sampled_from([None, None, None, "2000-01-01T00:00:00Z", "2099-01-01T00:00:00Z", "soon"]))
    if expiry:
        kwargs["expiresAt"] = expiry
    if draw(st.integers(0, 2)) == 0:
        return share_(f"s{i}", selector=draw(selector), **kwargs)
    return share_(f"s{i}", run=draw(st.sampled_from(run_names + ["gone"])), **kwargs)


@st.composite
def scenario(draw):
    runs = draw(st.lists(run_strategy, min_size=1, max_size=3, unique_by=lambda x: x["metadata"]["name"]))
    names = [x["metadata"]["name"] for x in runs]
    shares = draw(st.lists(share_strategy(names), max_size=6))
    settings = draw(st.sampled_from([
        SETTINGS, Settings(owner_access_selector="toolshare.dev/ssh-access=true"),
        Settings(tls_cluster_issuer="le", ingress_namespace="ing")]))
    return runs, shares, settings


PROPERTY = hsettings(max_examples=300, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow])


def _closed_ports(run):
    """Port 22 and every port of an endpoint that is not plainly http/https."""
    eps = [e for e in run["spec"]["endpoints"] if isinstance(e, dict)]
    return {22} | {e.get("port") for e in eps if e.get("protocol") not in ("http", "https")
                   and isinstance(e.get("port"), int)}


def _ssh_names(run):
    return {e.get("name") for e in run["spec"]["endpoints"] if e.get("protocol") not in ("http", "https")}


@PROPERTY
@given(scenario())
def test_ssh_is_never_exposed(case):
    runs, shares, settings = case
    runs_by_name = {x["metadata"]["name"]: x for x in runs}
    for run in runs:
        children = render.render_children(run, shares, settings, NOW, runs_by_name)
        closed, ssh_names = _closed_ports(run), _ssh_names(run)
        pod = by_kind(children, "Pod")[0]
        container_ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0].get("ports", [])}
        services = by_kind(children, "Service")
        service_ports = {}
        for svc in services:
            for port in svc["spec"]["ports"]:
                target = container_ports[port["targetPort"]]
                assert port["port"] not in closed and target not in closed
                assert port["name"] not in ssh_names and port["targetPort"] not in ssh_names
                service_ports[port["name"]] = target
        for ing in by_kind(children, "Ingress"):
            backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
            assert backend["name"] == model.service_name(run["metadata"]["name"])
            port_name = backend["port"]["name"]
            assert port_name in service_ports and service_ports[port_name] not in closed
            endpoint = ing["metadata"]["labels"]["toolshare.dev/endpoint"]
            assert endpoint == port_name and endpoint not in ssh_names
            assert ing["metadata"]["annotations"][NGINX + "auth-url"].endswith("/" + endpoint)
        (np,) = by_kind(children, "NetworkPolicy")
        for rule in np["spec"].get("ingress", []):
            if any("namespaceSelector" in peer for peer in rule["from"]):
                assert all(p["port"] not in closed for p in rule["ports"])
            else:  # only the owner-access pods, only when configured
                assert settings.owner_access_labels
                assert rule["from"] == [{"podSelector": {"matchLabels": settings.owner_access_labels}}]


@PROPERTY
@given(scenario())
def test_every_principal_in_an_output_matches_the_grammar(case):
    runs, shares, settings = case
    runs_by_name = {x["metadata"]["name"]: x for x in runs}
    for run in runs:
        for ing in by_kind(render.render_children(run, shares, settings, NOW, runs_by_name), "Ingress"):
            ann = ing["metadata"]["annotations"]
            for key in ("toolshare.dev/owner", "toolshare.dev/allowed-users", "toolshare.dev/allowed-groups"):
                names = [n for n in ann[key].split(",") if n]
                assert all(is_valid_principal(n) for n in names)
                assert names == sorted(set(names))
            for value in ann.values():
                assert not any(c in value for c in " \t\n\"'\\;{}")
        status = render.run_status(run, shares, settings, NOW, runs_by_name)
        assert all(is_valid_principal(p) for p in status["sharedWith"]["users"] + status["sharedWith"]["groups"])


def check_deterministic(case, rnd) -> None:
    """The same children and status whatever the order of the shares and runs (the Gateway API
    rendering's test uses it too)."""
    runs, shares, settings = case
    runs_by_name = {x["metadata"]["name"]: x for x in runs}
    shuffled = list(shares)
    rnd.shuffle(shuffled)
    for run in runs:
        first = render.render_children(run, shares, settings, NOW, runs_by_name)
        again = render.render_children(copy.deepcopy(run), shuffled, settings, NOW, dict(reversed(runs_by_name.items())))
        assert first == again
        assert render.run_status(run, shares, settings, NOW, runs_by_name) == render.run_status(
            run, shuffled, settings, NOW, runs_by_name)


@PROPERTY
@given(scenario(), st.randoms(use_true_random=False))
def test_rendering_is_deterministic(case, rnd):
    check_deterministic(case, rnd)


@PROPERTY
@given(scenario(), st.sampled_from(GOOD_PRINCIPALS), st.lists(st.sampled_from(GOOD_PRINCIPALS), max_size=3))
def test_access_is_owner_or_user_or_group_of_an_active_share(case, user, groups):
    runs, shares, settings = case
    runs_by_name = {x["metadata"]["name"]: x for x in runs}
    for run in runs:
        name, owner = run["metadata"]["name"], run["spec"]["owner"]
        acls = access.access_for(run, shares, NOW, runs_by_name)
        assert set(acls) == {e.name for e in model.http_endpoints(run)}
        for endpoint, acl in acls.items():
            # Independent oracle: the owner, or an active share on this run and endpoint that
            # names the user or one of the user's groups.
            granted = user == owner
            for share in shares:
                state = access.share_state(share, runs_by_name, NOW)
                spec = share["spec"]
                if state.reason != "Active" or name not in state.runs:
                    continue
                if spec.get("endpoints") and endpoint not in spec["endpoints"]:
                    continue
                granted |= user in spec.get("users", []) or bool(set(groups) & set(spec.get("groups", [])))
            assert access.is_allowed(owner, acl, user, groups) == granted


@PROPERTY
@given(scenario())
def test_names_and_hosts_are_valid_dns(case):
    runs, shares, settings = case
    for run in runs:
        host = model.host_for(run, settings)
        assert len(host) <= 253 and is_dns_label(host.split(".")[0])
        for child in render.render_children(run, shares, settings, NOW):
            name = child["metadata"]["name"]
            assert len(name) <= 253 and all(is_dns_label(part) for part in name.split("."))
            if child["kind"] == "Service":
                assert len(name) <= 63 and name[0].isalpha()


def test_an_ssh_port_reused_by_http_endpoints_exposes_nothing():
    run = run_(endpoints=[{"name": "web", "port": 22, "protocol": "http"},
                          {"name": "ssh", "port": 2222, "protocol": "ssh"},
                          {"name": "jupyter", "port": 2222, "protocol": "http", "path": "/j"}])
    children = render.render_children(run, [share_(endpoints=["web", "jupyter"])], SETTINGS, NOW)
    assert by_kind(children, "Service") == [] and by_kind(children, "Ingress") == []
    assert "ingress" not in by_kind(children, "NetworkPolicy")[0]["spec"]


def _rendered(case):
    runs, shares, settings = case
    runs_by_name = {x["metadata"]["name"]: x for x in runs}
    return [(run, render.render_children(run, shares, settings, NOW, runs_by_name),
             access.access_for(run, shares, NOW, runs_by_name)) for run in runs]


REACHABLE = {
    "an ssh endpoint next to a rendered Service": lambda case: any(
        by_kind(children, "Service") and any(e.get("protocol") == "ssh" for e in run["spec"]["endpoints"])
        for run, children, _ in _rendered(case)),
    "an http endpoint on port 22": lambda case: any(
        e.get("port") == 22 and e.get("protocol") in ("http", "https")
        for run, _, _ in _rendered(case) for e in run["spec"]["endpoints"]),
    "an owner-access SSH rule": lambda case: any(
        len(children[-1]["spec"].get("ingress", [])) == 2 for _, children, _ in _rendered(case)),
    "a group granted by a selector share": lambda case: any(
        "runSelector" in sh["spec"] and sh["spec"]["groups"] for sh in case[1]) and any(
        acl.groups for _, _, access in _rendered(case) for acl in access.values()),
    "a share Invalid for a hostile principal": lambda case: any(
        "principal grammar" in access.share_state(sh, {}, NOW).message for sh in case[1]),
    "a share Invalid for naming an SSH endpoint": lambda case: any(
        "SSH" in access.share_state(sh, {x["metadata"]["name"]: x for x in case[0]}, NOW).message
        for sh in case[1]),
}


@pytest.mark.parametrize("what", sorted(REACHABLE))
def test_property_strategies_reach_the_interesting_cases(what):
    # Guard against strategies that silently stop producing what the properties are about.
    found = find(scenario(), REACHABLE[what],
                 settings=hsettings(max_examples=2000, database=None, phases=[Phase.generate]))
    assert REACHABLE[what](found)
