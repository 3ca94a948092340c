from __future__ import annotations

from cryptography import x509

from toolshare import pki


def test_pki_is_made_once_and_tokens_cover_every_identity(tmp_path):
    first = pki.ensure_pki(tmp_path / "pki")
    assert set(first.tokens) == {"admin", "alice", "bob", "carol", "system:kube-controller-manager"}
    assert len(set(first.tokens.values())) == 5
    lines = first.token_file.read_text().splitlines()
    assert any(line.endswith(',alice,alice,"lab,data-science"') for line in lines)
    assert any(line.endswith(',admin,admin,"system:masters"') for line in lines)
    again = pki.ensure_pki(tmp_path / "pki")
    assert again.tokens == first.tokens
    assert (tmp_path / "pki" / "ca.key").stat().st_mode & 0o077 == 0


def test_serving_certificate_is_signed_by_the_ca_for_loopback(tmp_path):
    p = pki.ensure_pki(tmp_path / "pki")
    ca = x509.load_pem_x509_certificate(p.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(p.serving_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert [str(i) for i in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
