"""Settings: documented defaults, environment overrides, and refusals naming the variable."""

import dataclasses

import pytest

from toolshare.settings import Settings, SettingsError


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
