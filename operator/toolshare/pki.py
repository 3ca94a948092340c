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
# The node's components: the scheduler and kube-proxy as the users the bootstrap policy binds; the
# kubelet as its node (the Node authorizer and NodeRestriction limit it to its own objects);
# kube-router as itself (bound by the node's setup to read Pods, namespaces and NetworkPolicies).
SCHEDULER = Identity("system:kube-scheduler", ())
KUBE_PROXY = Identity("system:kube-proxy", ())
NODE = Identity("system:node:toolshare-node", ("system:nodes",))
KUBE_ROUTER = Identity("toolshare:kube-router", ())
COMPONENT_IDENTITIES = (CONTROLLER_MANAGER, SCHEDULER, KUBE_PROXY, NODE, KUBE_ROUTER)


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


def _leaf(ca_key, ca_cert: x509.Certificate, subject: list, usage, sans: list | None = None):
    """A fresh key and a certificate for it from the CA: not a CA, for `usage` (an EKU OID)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def make_serving_cert(
    ca_key, ca_cert: x509.Certificate, common_name: str, dns_names: list[str], ips: list[str]
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    return _leaf(ca_key, ca_cert, [x509.NameAttribute(NameOID.COMMON_NAME, common_name)],
                 ExtendedKeyUsageOID.SERVER_AUTH, sans)


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


# The API server's addresses: loopback, the `kubernetes` Service's ClusterIP (first of 10.96.0.0/16).
SERVING_IPS = ("127.0.0.1", "10.96.0.1")
SERVING_NAMES = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local"]


def ensure_pki(directory: Path, extra_ips: tuple[str, ...] = ()) -> ClusterPKI:
    """Create (or reuse, if complete) the cluster's certificates, keys and token file in `directory`.
    `extra_ips` (the node's address, where Pods reach the API server) join the serving certificate;
    a certificate without one of them is made again."""
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
        key, cert = make_serving_cert(ca_key, ca_cert, "kube-apiserver", SERVING_NAMES,
                                      [*SERVING_IPS, *extra_ips])
        write_key_and_cert(directory, "apiserver", key, cert)
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(pki.sa_key, _key_pem(sa))
        pki.sa_pub.write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        lines = []
        _write_private(pki.token_file, b"")
    elif extra_ips:
        served = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
        sans = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
        if not set(extra_ips) <= have:
            ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
            ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
            key, cert = make_serving_cert(ca_key, ca_cert, "kube-apiserver", SERVING_NAMES,
                                          [*SERVING_IPS, *extra_ips])
            write_key_and_cert(directory, "apiserver", key, cert)
    tokens = {}
    for line in pki.token_file.read_text().splitlines():
        token, user = line.split(",")[:2]
        tokens[user] = token
    missing = [i for i in IDENTITIES + COMPONENT_IDENTITIES if i.name not in tokens]
    if missing:  # a directory made before an identity was added gets it (read at the API server's start)
        lines = [f'{secrets.token_urlsafe(32)},{i.name},{i.name},"{",".join(i.groups)}"' for i in missing]
        with open(pki.token_file, "a") as f:
            f.write("\n".join(lines) + "\n")
        tokens.update((line.split(",")[1], line.split(",")[0]) for line in lines)
    return ClusterPKI(**{**pki.__dict__, "tokens": tokens})


def ensure_ca(directory: Path, stem: str, common_name: str) -> Path:
    """A CA of its own in `directory` (made once): its certificate's path."""
    if not ((directory / f"{stem}.key").exists() and (directory / f"{stem}.crt").exists()):
        write_key_and_cert(directory, stem, *make_ca(common_name))
    return directory / f"{stem}.crt"


def ensure_client_cert(directory: Path, stem: str, common_name: str, organizations: tuple[str, ...] = (),
                       ca: str = "ca") -> tuple[Path, Path]:
    """A client certificate from the CA `ca` (the cluster's unless named) in `directory`, made once:
    (key, cert) paths."""
    key_path, cert_path = directory / f"{stem}.key", directory / f"{stem}.crt"
    if key_path.exists() and cert_path.exists():
        return key_path, cert_path
    ca_key = serialization.load_pem_private_key((directory / f"{ca}.key").read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((directory / f"{ca}.crt").read_bytes())
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    key, cert = _leaf(ca_key, ca_cert, subject, ExtendedKeyUsageOID.CLIENT_AUTH)
    return write_key_and_cert(directory, stem, key, cert)
