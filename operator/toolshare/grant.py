"""Grants: the gate's signed word that a request may reach one endpoint of one run as one person. Pure.

The gate adds a grant to every answer that lets a request through (202); the router copies it onto
the request (it is listed in the auth response headers) and the run's guard, in front of the tool
in the run's own Pod, admits only requests that carry a valid grant for its run and endpoint,
then strips it. So a request that did not come through the gate is refused by the guard even where
the NetworkPolicy is missing, and the tool never sees the grant. The guard also keeps the grant of
every connection it holds open and shows it to the gate when it asks whether that person may still
be there (gate/guards.py): a grant proves the gate once vouched for exactly that, so the gate
answers those questions and no others.

Ed25519: the gate holds the private key, guards only the public one, so nothing a tool Pod holds
can make a grant. A grant is `<payload>.<signature>`, both unpadded base64url, the payload compact
JSON: {"v": 1, "ns", "run", "ep", "sub", "grp", "iat", "exp"} (times in milliseconds since the
epoch, so a guard can tell a grant made before a revocation from one made after it, even within
the same second). It is short-lived (TTL): a captured
grant (the guard strips it, so only someone on the wire could) opens nothing a minute later.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HEADER = "X-Toolshare-Grant"
TTL = 60  # seconds a grant admits new requests; an open connection stays while the gate says yes
MAX_LENGTH = 16384  # a header no bigger than this (thousands of groups would not fit: refused)
VERSION = 1


class Grant(NamedTuple):
    namespace: str
    run: str
    endpoint: str
    user: str
    groups: tuple[str, ...]
    issued: int  # milliseconds since the epoch
    expires: int

    @property
    def identity(self) -> tuple[str, str, tuple[str, ...]]:
        """What the guard groups connections by: one question to the gate per identity."""
        return self.endpoint, self.user, self.groups


class GrantRefused(ValueError):
    """The grant does not admit the request; the message says why (never echoing the grant)."""


def ms(seconds: float) -> int:
    return int(seconds * 1000)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the grant key must be an Ed25519 private key (PEM, PKCS#8)")
    return key


def public_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as the guard takes it (TOOLSHARE_GRANT_PUBLIC_KEY): raw 32 bytes, base64url."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return _b64(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def load_public(text: str) -> Ed25519PublicKey:
    try:
        raw = _unb64(text.strip())
    except (binascii.Error, ValueError):
        raise ValueError("the grant public key is not base64url") from None
    if len(raw) != 32:
        raise ValueError(f"the grant public key must be 32 bytes (Ed25519), not {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def make(key: Ed25519PrivateKey, namespace: str, run: str, endpoint: str, user: str,
         groups: tuple[str, ...] | list[str], now: float, ttl: int = TTL) -> str:
    """A grant; ValueError if it would be longer than a guard takes (MAX_LENGTH): the gate then
    refuses the request rather than let through one that no guard would admit."""
    payload = json.dumps({"v": VERSION, "ns": namespace, "run": run, "ep": endpoint, "sub": user,
                          "grp": list(groups), "iat": ms(now), "exp": ms(now) + ttl * 1000},
                         separators=(",", ":"), ensure_ascii=False).encode()
    token = f"{_b64(payload)}.{_b64(key.sign(payload))}"
    if len(token) > MAX_LENGTH:
        raise ValueError(f"a grant for {len(groups)} groups would be {len(token)} characters, over {MAX_LENGTH}")
    return token


def read(public: Ed25519PublicKey, token: str) -> Grant:
    """The grant `token` carries if the gate signed it (whatever its age or target); else refused."""
    if not isinstance(token, str) or not token:
        raise GrantRefused("no grant: the request did not come through the gate")
    if len(token) > MAX_LENGTH:
        raise GrantRefused("the grant is too long")
    payload_text, dot, signature_text = token.partition(".")
    if not dot:
        raise GrantRefused("the grant is malformed")
    try:
        payload, signature = _unb64(payload_text), _unb64(signature_text)
        public.verify(signature, payload)
    except (binascii.Error, ValueError, InvalidSignature):
        raise GrantRefused("the grant is not signed by the gate") from None
    try:
        data = json.loads(payload)
        grant = Grant(data["ns"], data["run"], data["ep"], data["sub"], tuple(data["grp"]), data["iat"], data["exp"])
    except (ValueError, KeyError, TypeError):
        raise GrantRefused("the grant's payload is malformed") from None
    if data.get("v") != VERSION or not all(isinstance(v, str) for v in (*grant[:4], *grant.groups)) \
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in (grant.issued, grant.expires)):
        raise GrantRefused("the grant's payload is malformed")
    return grant


def admit(public: Ed25519PublicKey, token: str, namespace: str, run: str, endpoint: str, now: float) -> Grant:
    """The grant, if it admits a new request to `endpoint` of `run` in `namespace` at `now` (seconds)."""
    grant = read(public, token)
    if (grant.namespace, grant.run, grant.endpoint) != (namespace, run, endpoint):
        raise GrantRefused(f"the grant is for {grant.namespace}/{grant.run}/{grant.endpoint}, "
                           f"not {namespace}/{run}/{endpoint}")
    if ms(now) >= grant.expires:
        raise GrantRefused("the grant has expired")
    if grant.issued > ms(now) + 5000:  # clocks a little apart are fine; a grant from the future is not
        raise GrantRefused("the grant is not valid yet")
    return grant
