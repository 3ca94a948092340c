from __future__ import annotations

from cryptography import x509

from toolshare import pki


def test_pki_is_made_once_and_tokens_cover_every_identity(tmp_path):
    first = pki.ensure_pki(tmp_path / "pki")
    assert set(first.tokens) == {"admin", "alice", "bob", "carol", "system:kube-controller-manager",
                                 "system:kube-scheduler", "system:kube-proxy", "system:node:toolshare-node",
                                 "toolshare:kube-router"}
    assert len(set(first.tokens.values())) == 9
    lines = first.token_file.read_text().splitlines()
    assert any(line.endswith(',alice,alice,"lab,data-science"') for line in lines)
    assert any(line.endswith(',admin,admin,"system:masters"') for line in lines)
    assert any(line.endswith(',system:node:toolshare-node,system:node:toolshare-node,"system:nodes"') for line in lines)
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
    assert [str(i) for i in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "10.96.0.1"]


def test_a_directory_made_before_an_identity_existed_gets_its_token(tmp_path):
    first = pki.ensure_pki(tmp_path / "pki")
    kept = [line for line in first.token_file.read_text().splitlines() if "kube-router" not in line]
    first.token_file.write_text("\n".join(kept) + "\n")
    again = pki.ensure_pki(tmp_path / "pki")
    assert again.tokens["alice"] == first.tokens["alice"]
    assert "toolshare:kube-router" in again.tokens


def test_the_node_address_joins_the_serving_certificate_once_asked(tmp_path):
    first = pki.ensure_pki(tmp_path / "pki")
    p = pki.ensure_pki(tmp_path / "pki", extra_ips=("192.0.2.2",))
    cert = x509.load_pem_x509_certificate(p.serving_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "192.0.2.2" in [str(i) for i in sans.get_values_for_type(x509.IPAddress)]
    assert p.ca_cert.read_bytes() == first.ca_cert.read_bytes()  # same CA: kubeconfigs stay valid


def test_client_certificates_name_the_user_and_groups(tmp_path):
    pki.ensure_pki(tmp_path / "pki")
    _, crt = pki.ensure_client_cert(tmp_path / "pki", "kubelet-client", "toolshare:apiserver", ("system:masters",))
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=toolshare:apiserver,O=system:masters"
