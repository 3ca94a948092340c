"""Certificates and keys for the local control plane, made with `cryptography`.

Everything is generated once per cluster directory: a CA, the API server's serving certificate,
the service-account signing key pair, and random bearer tokens for the fixed test identities.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class Identity:
    """A fixed test user, authenticated by a static bearer token."""

    name: str
    groups: tuple[str, ...]


# The identities every local cluster knows. `admin` is a cluster administrator through system:masters.
IDENTITIES: tuple[Identity, ...] = (
    Identity("admin", ("system:masters",)),
    Identity("alice", ("lab", "data-science")),
    Identity("bob", ("lab",)),
    Identity("carol", ("guests",)),
)
# The controller manager authenticates as its well-known user, which RBAC's bootstrap policy binds.
CONTROLLER_MANAGER = Identity("system:kube-controller-manager", ())


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_serving_cert(
    ca_key, ca_cert: x509.Certificate, common_name: str, dns_names: list[str], ips: list[str]
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def write_key_and_cert(directory: Path, stem: str, key, cert: x509.Certificate) -> tuple[Path, Path]:
    key_path, cert_path = directory / f"{stem}.key", directory / f"{stem}.crt"
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@dataclass(frozen=True)
class ClusterPKI:
    """Paths of the files kube-apiserver and kube-controller-manager are started with."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path
    token_file: Path
    tokens: dict[str, str]


def ensure_pki(directory: Path) -> ClusterPKI:
    """Create (or reuse, if complete) the cluster's certificates, keys and token file in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    pki = ClusterPKI(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
        token_file=directory / "tokens.csv",
        tokens={},
    )
    files = [pki.ca_cert, pki.ca_key, pki.serving_cert, pki.serving_key, pki.sa_key, pki.sa_pub, pki.token_file]
    if not all(f.exists() for f in files):
        ca_key, ca_cert = make_ca("toolshare-local-ca")
        write_key_and_cert(directory, "ca", ca_key, ca_cert)
        key, cert = make_serving_cert(
            ca_key, ca_cert, "kube-apiserver",
            ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
            ["127.0.0.1"],
        )
        write_key_and_cert(directory, "apiserver", key, cert)
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(pki.sa_key, _key_pem(sa))
        pki.sa_pub.write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        lines = []
        for ident in IDENTITIES + (CONTROLLER_MANAGER,):
            groups = ",".join(ident.groups)
            lines.append(f'{secrets.token_urlsafe(32)},{ident.name},{ident.name},"{groups}"')
        _write_private(pki.token_file, ("\n".join(lines) + "\n").encode())
    tokens = {}
    for line in pki.token_file.read_text().splitlines():
        token, user = line.split(",")[:2]
        tokens[user] = token
    return ClusterPKI(**{**pki.__dict__, "tokens": tokens})
