"""Settings: documented defaults, environment overrides, and refusals naming the variable."""

import dataclasses

import pytest

from toolshare.settings import GateService, Settings, SettingsError, gate_service


def test_defaults():
    s = Settings.from_env({})
    assert s.base_domain == "toolshare.localhost"
    assert s.ingress_class == "nginx"
    assert s.gate_url == "http://toolshare-gate.toolshare-system.svc.cluster.local:8080"
    assert s.signin_url == (
        "https://auth.toolshare.localhost/oauth2/start?rd=$scheme://$host$escaped_request_uri")
    assert s.ingress_namespace == "ingress-nginx"
    assert s.tls_secret == "" and s.tls_cluster_issuer == ""
    assert not s.tls_enabled and s.url_scheme == "http"
    assert s.owner_access_selector == "" and s.owner_access_labels == {}
    assert s.field_manager == "toolshare"
    assert s.routing == "ingress" and not s.gateway_routing
    assert s.gateway == "" and s.gateway_ref == ("", "")
    assert s.gateway_section == "" and s.gateway_auth == "external-auth"
    assert s == Settings()


def test_environment_overrides():
    s = Settings.from_env({
        "TOOLSHARE_BASE_DOMAIN": "tools.example.org",
        "TOOLSHARE_INGRESS_CLASS": "internal",
        "TOOLSHARE_GATE_URL": "https://gate.example.org/api",
        "TOOLSHARE_INGRESS_NAMESPACE": "ingress",
        "TOOLSHARE_TLS_SECRET": "wildcard-tls",
        "TOOLSHARE_SSH_FROM": "toolshare.dev/ssh-access=true, team==a",
        "TOOLSHARE_FIELD_MANAGER": "toolshare-test",
        "UNRELATED": "ignored",
    })
    assert s.base_domain == "tools.example.org"
    assert s.signin_url.startswith("https://auth.tools.example.org/oauth2/start?rd=")
    assert s.ingress_class == "internal"
    assert s.gate_url == "https://gate.example.org/api"
    assert s.ingress_namespace == "ingress"
    assert s.tls_enabled and s.url_scheme == "https"
    assert s.owner_access_labels == {"toolshare.dev/ssh-access": "true", "team": "a"}
    assert s.field_manager == "toolshare-test"


def test_empty_variables_mean_default():
    assert Settings.from_env({"TOOLSHARE_BASE_DOMAIN": "", "TOOLSHARE_SSH_FROM": "  "}) == Settings()


def test_explicit_signin_url_and_cluster_issuer():
    s = Settings.from_env({"TOOLSHARE_SIGNIN_URL": "https://sso.example.org/oauth2/start",
                           "TOOLSHARE_TLS_CLUSTER_ISSUER": "letsencrypt"})
    assert s.signin_url == "https://sso.example.org/oauth2/start"
    assert s.tls_enabled and s.url_scheme == "https"


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().base_domain = "x"  # type: ignore[misc]


@pytest.mark.parametrize("var,value", [
    ("TOOLSHARE_BASE_DOMAIN", "Example.org"),
    ("TOOLSHARE_BASE_DOMAIN", "-bad.org"),
    ("TOOLSHARE_BASE_DOMAIN", "a b.org"),
    ("TOOLSHARE_BASE_DOMAIN", ("a" * 60 + ".") * 4),
    ("TOOLSHARE_INGRESS_CLASS", "Nginx!"),
    ("TOOLSHARE_GATE_URL", "gate:8080"),
    ("TOOLSHARE_GATE_URL", "ftp://gate"),
    ("TOOLSHARE_GATE_URL", "http://gate/"),
    ("TOOLSHARE_GATE_URL", "http://gate/check?x=1"),
    ("TOOLSHARE_GATE_URL", "http://gate/$host"),
    ("TOOLSHARE_GATE_URL", "http://gate;/x"),
    ("TOOLSHARE_SIGNIN_URL", "https://auth/x y"),
    ("TOOLSHARE_SIGNIN_URL", "https://auth/x;proxy_pass http://evil"),
    ("TOOLSHARE_SIGNIN_URL", 'https://auth/"x"'),
    ("TOOLSHARE_SIGNIN_URL", "https://auth/{x}"),
    ("TOOLSHARE_SIGNIN_URL", "javascript:alert(1)"),
    ("TOOLSHARE_INGRESS_NAMESPACE", "Ingress_Nginx"),
    ("TOOLSHARE_TLS_SECRET", "Bad Secret"),
    ("TOOLSHARE_TLS_CLUSTER_ISSUER", "bad/issuer"),
    ("TOOLSHARE_SSH_FROM", "ssh-access"),
    ("TOOLSHARE_SSH_FROM", "a=b,a=c"),
    ("TOOLSHARE_SSH_FROM", "a!=b"),
    ("TOOLSHARE_SSH_FROM", "a in (b)"),
    ("TOOLSHARE_SSH_FROM", "a=b c"),
    ("TOOLSHARE_FIELD_MANAGER", "tool share"),
    ("TOOLSHARE_ROUTING", "Gateway"),
    ("TOOLSHARE_ROUTING", "nginx"),
    ("TOOLSHARE_GATEWAY", "public"),
    ("TOOLSHARE_GATEWAY", "Gateways/public"),
    ("TOOLSHARE_GATEWAY", "gateways/Public"),
    ("TOOLSHARE_GATEWAY", "gateways/"),
    ("TOOLSHARE_GATEWAY", "/public"),
    ("TOOLSHARE_GATEWAY", "a/b/c"),
    ("TOOLSHARE_GATEWAY_SECTION", "Web Listener"),
    ("TOOLSHARE_GATEWAY_SECTION", "web;x"),
    ("TOOLSHARE_GATEWAY_AUTH", "nginx"),
    ("TOOLSHARE_GATEWAY_AUTH", "ExternalAuth"),
])
def test_invalid_values_name_the_variable(var, value):
    with pytest.raises(SettingsError) as e:
        Settings.from_env({var: value})
    assert var in str(e.value)


def test_all_problems_are_reported_at_once():
    with pytest.raises(SettingsError) as e:
        Settings.from_env({"TOOLSHARE_BASE_DOMAIN": "BAD", "TOOLSHARE_INGRESS_NAMESPACE": "BAD"})
    assert "TOOLSHARE_BASE_DOMAIN" in str(e.value) and "TOOLSHARE_INGRESS_NAMESPACE" in str(e.value)


def test_direct_construction_is_validated_too():
    with pytest.raises(SettingsError):
        Settings(ingress_namespace="Not A Namespace")


def test_settings_error_is_a_value_error():
    assert issubclass(SettingsError, ValueError)


def test_every_field_has_an_environment_variable():
    names = [f.metadata["env"] for f in dataclasses.fields(Settings)]
    assert all(n.startswith("TOOLSHARE_") for n in names)
    assert len(set(names)) == len(names)


# --- the Gateway API backend ----------------------------------------------------------------


def test_gateway_routing_from_the_environment():
    s = Settings.from_env({"TOOLSHARE_ROUTING": "gateway", "TOOLSHARE_GATEWAY": "gateways/public",
                           "TOOLSHARE_GATEWAY_SECTION": "https", "TOOLSHARE_GATEWAY_AUTH": "envoy-gateway"})
    assert s.gateway_routing and s.gateway_ref == ("gateways", "public")
    assert s.gateway_section == "https" and s.gateway_auth == "envoy-gateway"
    assert s.gate_service == GateService("toolshare-gate", "toolshare-system", 8080, "")


def test_gateway_routing_needs_a_gateway():
    with pytest.raises(SettingsError) as e:
        Settings.from_env({"TOOLSHARE_ROUTING": "gateway"})
    assert "TOOLSHARE_GATEWAY=''" in str(e.value) and "required with TOOLSHARE_ROUTING=gateway" in str(e.value)


def test_a_gateway_is_checked_but_unused_in_ingress_mode():
    s = Settings.from_env({"TOOLSHARE_GATEWAY": "gateways/public", "TOOLSHARE_GATEWAY_AUTH": "traefik"})
    assert not s.gateway_routing and s.gateway_ref == ("gateways", "public")


@pytest.mark.parametrize("auth", ["external-auth", "envoy-gateway"])
@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://10.96.0.12:8080", "https://gate.example.org",
                                 "http://toolshare-gate:8080", "http://toolshare-gate.toolshare-system:8080",
                                 "http://gate.ns.svc.example.org"])
def test_auth_by_service_needs_the_gate_services_dns_name(auth, url):
    with pytest.raises(SettingsError) as e:
        Settings.from_env({"TOOLSHARE_ROUTING": "gateway", "TOOLSHARE_GATEWAY": "gateways/public",
                           "TOOLSHARE_GATEWAY_AUTH": auth, "TOOLSHARE_GATE_URL": url})
    message = str(e.value)
    assert "TOOLSHARE_GATE_URL" in message and f"TOOLSHARE_GATEWAY_AUTH={auth}" in message
    assert "<service>.<namespace>.svc" in message


def test_traefik_calls_any_gate_url():
    s = Settings.from_env({"TOOLSHARE_ROUTING": "gateway", "TOOLSHARE_GATEWAY": "gateways/public",
                           "TOOLSHARE_GATEWAY_AUTH": "traefik", "TOOLSHARE_GATE_URL": "http://127.0.0.1:8080"})
    assert s.gate_service is None


def test_an_unusable_gate_url_is_fine_for_ingresses():
    assert Settings.from_env({"TOOLSHARE_GATE_URL": "http://127.0.0.1:8080"}).gate_service is None


@pytest.mark.parametrize("url,service", [
    ("http://toolshare-gate.toolshare-system.svc.cluster.local:8080", GateService("toolshare-gate", "toolshare-system", 8080, "")),
    ("http://gate.auth.svc", GateService("gate", "auth", 80, "")),
    ("https://gate.auth.svc", GateService("gate", "auth", 443, "")),
    ("https://gate.auth.svc:8443/toolshare", GateService("gate", "auth", 8443, "/toolshare")),
    ("http://127.0.0.1:8080", None),
    ("http://Gate.auth.svc", None),
    ("http://gate.auth.svc.cluster.local.evil.org", None),
    ("http://1gate.auth.svc", None),  # Service names start with a letter
    ("http://gate.auth.svc:0", None),
    ("http://gate.auth.svc:70000", None),
])
def test_gate_service(url, service):
    assert gate_service(url) == service
