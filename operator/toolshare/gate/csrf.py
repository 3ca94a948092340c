"""The page's anti-CSRF token and same-origin check: pure.

The token is an HMAC of the signed-in user under the caller's own credential: the sign-in session
cookie(s) oauth2-proxy set, or the bearer token. A page on another site can make the browser send
those credentials, but it cannot read them, so it cannot compute the token that every write must
carry. Nothing is stored: any gate replica checks any token, and a new session (sign-out, refresh)
makes the old tokens worthless. Writes must also come from the page's own origin (Origin and
Sec-Fetch-Site, where the browser sends them), and the session cookie is SameSite by oauth2-proxy.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

FIELD = "csrf"  # the hidden form field
_CONTEXT = b"toolshare page write v1\0"


def credential(headers: Mapping[str, str], cookie_headers: Iterable[str], session_cookie: str) -> str | None:
    """The credential the caller signed in with: the session cookie(s) (a large session is split
    into <name>_0, <name>_1, ...), else the Authorization header; None when there is neither."""
    parts = []
    for header in cookie_headers:
        for pair in header.split(";"):
            name, _, value = pair.strip().partition("=")
            if name == session_cookie or (name.startswith(session_cookie + "_") and name != session_cookie + "_csrf"):
                parts.append(f"{name}={value}")
    if parts:
        return "; ".join(sorted(parts))
    authorization = headers.get("Authorization") or ""
    return authorization or None


def token(credential_: str, user: str) -> str:
    return hmac.new(credential_.encode(), _CONTEXT + user.encode(), hashlib.sha256).hexdigest()


def valid(given: object, credential_: str | None, user: str) -> bool:
    return (isinstance(given, str) and credential_ is not None
            and hmac.compare_digest(given.encode(), token(credential_, user).encode()))


def cross_site(headers: Mapping[str, str], host: str) -> str | None:
    """Why a write is not from the page's own origin, or None. Browsers send Sec-Fetch-Site and,
    on a form POST, Origin; a missing header is left to the token (non-browser clients)."""
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"the form was sent from another site (Sec-Fetch-Site: {site})"
    origin = headers.get("Origin")
    if origin is not None and origin.split("://", 1)[-1] != host:
        return f"the form was sent from another origin ({origin})"
    return None
