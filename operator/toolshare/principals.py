"""The names Toolshare accepts from users: principals and DNS-1123 labels.

A principal (a user or group name) ends up in Ingress annotations read by the access gate, so the
grammar is deliberately strict: letters, digits and ``. _ - @ + :``, ``/``, starting with a letter
or digit, at most 253 characters. It admits email-like user names (``alice@example.org``) and
common IdP group names (``lab:bio``, ``org/team``) and refuses whitespace, control characters,
quotes, ``$ { } ; # % & , \\`` and everything else. ``,`` matters most: the annotations are
comma-separated lists. The CRDs carry the very same regex (tests/unit/test_crds.py checks it).
"""

from __future__ import annotations

import re

# Same text as the CEL rules in crds/*.yaml. Used with fullmatch: Python's `$` would otherwise
# accept a trailing newline.
PRINCIPAL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+:/-]{0,252}$"
PRINCIPAL_RE = re.compile(PRINCIPAL_PATTERN)
PRINCIPAL_MAX_LENGTH = 253
PRINCIPAL_RULE = (
    "a principal uses only letters, digits and . _ - @ + : /, starts with a letter or digit "
    "and has at most 253 characters"
)

# RFC 1123 label, as Kubernetes validates object and port names (at most 63 characters).
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_LABEL_RE = re.compile(DNS_LABEL_PATTERN)
DNS_LABEL_MAX_LENGTH = 63

_ALLOWED_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@+:/-")


def validate_principal(name: object) -> str | None:
    """Return None for a valid principal, else a human error that names the broken rule."""
    if not isinstance(name, str):
        return f"principal must be a string, not {type(name).__name__}"
    if not name:
        return f"principal must not be empty: {PRINCIPAL_RULE}"
    if len(name) > PRINCIPAL_MAX_LENGTH:
        return f"principal is {len(name)} characters long: {PRINCIPAL_RULE}"
    if not name[0].isascii() or not name[0].isalnum():
        return f"principal {_quote(name)} does not start with a letter or digit: {PRINCIPAL_RULE}"
    bad = next((c for c in name if c not in _ALLOWED_CHARS), None)
    if bad is not None:
        return f"principal {_quote(name)} contains the character {bad!r}: {PRINCIPAL_RULE}"
    # The checks above are the grammar spelled out; the regex is the contract shared with the CRD.
    assert PRINCIPAL_RE.fullmatch(name), name
    return None


def is_valid_principal(name: object) -> bool:
    return isinstance(name, str) and PRINCIPAL_RE.fullmatch(name) is not None


def is_dns_label(name: object) -> bool:
    """True for an RFC 1123 label: lower-case alphanumerics and '-', at most 63 characters."""
    return (
        isinstance(name, str)
        and len(name) <= DNS_LABEL_MAX_LENGTH
        and DNS_LABEL_RE.fullmatch(name) is not None
    )


def _quote(name: str) -> str:
    # Error messages end up in status; escape and shorten whatever the user sent.
    return repr(name if len(name) <= 64 else name[:64] + "...")
