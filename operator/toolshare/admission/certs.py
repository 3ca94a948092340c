"""The webhook server's TLS: a CA and serving certificate made and renewed here, or provided.

Made with `cryptography` through toolshare.pki, the same helpers the local control plane uses for
its own PKI (the product owns them; the local environment borrows them, never the reverse).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from toolshare import pki

RENEW_BEFORE = dt.timedelta(days=30)


def provided_certs(directory: Path) -> tuple[Path | None, Path, Path]:
    """(ca.crt or None, tls.crt, tls.key) mounted by the installer, used as they are."""
    cert, key, ca = directory / "tls.crt", directory / "tls.key", directory / "ca.crt"
    missing = [p.name for p in (cert, key) if not p.is_file()]
    if missing:
        raise ValueError(f"TOOLSHARE_WEBHOOK_CERTS=provided: {', '.join(missing)} missing in {directory}")
    return (ca if ca.is_file() else None), cert, key


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _serving_cert_ok(path: Path, host: str) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    names = {str(n) for n in sans.get_values_for_type(x509.DNSName)}
    names |= {str(n) for n in sans.get_values_for_type(x509.IPAddress)}
    fresh = cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) > RENEW_BEFORE
    return host in names and fresh


def ensure_certs(directory: Path, host: str) -> tuple[Path, Path, Path]:
    """(ca.crt, tls.crt, tls.key) in `directory`: the CA kept, the serving cert renewed when its
    host is not in it or it expires within RENEW_BEFORE. Made with `cryptography` (pki.py)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    tls_cert, tls_key = directory / "tls.crt", directory / "tls.key"
    if ca_cert.exists() and ca_key.exists():
        key = load_pem_private_key(ca_key.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    else:
        key, cert = pki.make_ca("toolshare-webhook-ca")
        pki.write_key_and_cert(directory, "ca", key, cert)
    if not _serving_cert_ok(tls_cert, host):
        dns = [host] if not _is_ip(host) else []
        ips = [host] if _is_ip(host) else []
        skey, scert = pki.make_serving_cert(key, cert, host, dns + ["localhost"], ips + ["127.0.0.1"])
        pki.write_key_and_cert(directory, "tls", skey, scert)
    return ca_cert, tls_cert, tls_key
