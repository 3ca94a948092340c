"""The webhook server's certificates and configuration (the kopf wiring is tested on the cluster)."""

from __future__ import annotations

import ssl

import pytest
from cryptography import x509

from toolshare.admission.certs import ensure_certs
from toolshare.admission.webhooks import WebhookConfig


def sans(path):
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.DNSName)} | {str(v) for v in ext.get_values_for_type(x509.IPAddress)}


def test_certificates_are_made_once_and_renewed_for_a_new_host(tmp_path):
    ca, cert, key = ensure_certs(tmp_path, "127.0.0.1")
    assert "127.0.0.1" in sans(cert) and (tmp_path / "ca.key").stat().st_mode & 0o077 == 0
    # The serving certificate is signed by the CA handed to the API server (caBundle).
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    first = cert.read_bytes()
    ensure_certs(tmp_path, "127.0.0.1")
    assert cert.read_bytes() == first  # reused
    ca_before = ca.read_bytes()
    ensure_certs(tmp_path, "toolshare-webhook.toolshare-system.svc")
    assert "toolshare-webhook.toolshare-system.svc" in sans(cert) and ca.read_bytes() == ca_before


def test_config_from_env():
    config = WebhookConfig.from_env({"TOOLSHARE_WEBHOOK_LISTEN": "0.0.0.0:8443", "TOOLSHARE_WEBHOOK_CONFIG": "none"})
    assert (config.listen_addr, config.port, config.managed, config.advertised_host) == ("0.0.0.0", 8443, "none", "127.0.0.1")
    assert WebhookConfig.from_env({"TOOLSHARE_WEBHOOK_HOST": "hooks.example"}).advertised_host == "hooks.example"
    with pytest.raises(ValueError, match="TOOLSHARE_WEBHOOK_LISTEN"):
        WebhookConfig.from_env({"TOOLSHARE_WEBHOOK_LISTEN": "8443"})
    assert (WebhookConfig().client_ca, WebhookConfig().client_names) == (None, {"kube-apiserver-webhook-client"})
    config = WebhookConfig.from_env({"TOOLSHARE_WEBHOOK_CLIENT_CA": "/etc/ca.crt",
                                     "TOOLSHARE_WEBHOOK_CLIENT_NAMES": "front-proxy, apiserver"})
    assert (str(config.client_ca), config.client_names) == ("/etc/ca.crt", {"front-proxy", "apiserver"})
    with pytest.raises(ValueError, match="TOOLSHARE_WEBHOOK_CLIENT_NAMES"):
        WebhookConfig.from_env({"TOOLSHARE_WEBHOOK_CLIENT_NAMES": "apiserver,,"})
