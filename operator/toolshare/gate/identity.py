"""Who is calling, according to oauth2-proxy's /oauth2/auth (and nobody else).

Only the request's Cookie and Authorization headers are forwarded: any X-Auth-Request-* header
the client sent itself never reaches a decision. oauth2-proxy (run with --set-authorization-header)
answers 202 with the session's ID token in its Authorization header, or 401 without a valid
session or token.

The identity is read from that token's claims, exactly: the user from one configured claim
(default `preferred_username`; choose the claim your API server's --oidc-username-claim uses, so
the gate's users are the owners Kubernetes records), the groups from another (default `groups`, a
JSON list). Nothing is trimmed, split or taken from another claim when one is missing: a user
claim that is missing or breaks the principal grammar refuses the caller, and a group outside the
grammar (`visitors,lab`, ` lab`) is dropped and logged, never matched. oauth2-proxy verified the
token (signature, issuer, audience, expiry) before answering 202; the gate trusts that answer, as
it always trusted oauth2-proxy for identity.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohttp

from toolshare.gate.verdict import Identity
from toolshare.principals import is_valid_principal

log = logging.getLogger("toolshare.gate.identity")

FORWARDED = ("Cookie", "Authorization")
DEFAULT_SESSION_COOKIE = "_oauth2_proxy"  # oauth2-proxy's --cookie-name
TIMEOUT = aiohttp.ClientTimeout(total=5, sock_connect=2)


class IdentityUnavailable(Exception):
    """oauth2-proxy could not be asked or gave no usable answer: the gate fails closed."""


def forwarded_headers(request_headers: Mapping[str, str]) -> dict[str, str]:
    return {h: request_headers[h] for h in FORWARDED if h in request_headers}


def without_session(cookie_headers: Iterable[str], session_cookie: str = DEFAULT_SESSION_COOKIE) -> str:
    """The request's cookies minus the sign-in session's (oauth2-proxy splits a large session into
    <name>_0, <name>_1, ... and keeps <name>_csrf): what the tool may see of them."""
    kept = []
    for header in cookie_headers:
        for pair in header.split(";"):
            name = pair.split("=", 1)[0].strip()
            if name and name != session_cookie and not name.startswith(session_cookie + "_"):
                kept.append(pair.strip())
    return "; ".join(kept)


@dataclass(frozen=True)
class Claims:
    """Which ID-token claims name the user, the groups and the email."""

    user: str = "preferred_username"
    groups: str = "groups"
    email: str = "email"


class IdentityRefused(Exception):
    """oauth2-proxy accepted the caller, but the sign-in names no usable user: refused (403)."""


def token_claims(token: str) -> dict:
    """The payload of a JWT (already verified by oauth2-proxy), as a dict."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error) as e:
        raise IdentityUnavailable(f"oauth2-proxy's Authorization answer is not a JWT: {e}") from e
    if not isinstance(claims, dict):
        raise IdentityUnavailable("oauth2-proxy's Authorization answer carries no claims")
    return claims


def identity_from_answer(headers: Mapping[str, str], claims: Claims = Claims()) -> Identity:
    """The identity in oauth2-proxy's 202 answer: the ID token's configured claims, exactly."""
    authorization = headers.get("Authorization") or ""
    if not authorization.startswith("Bearer "):
        raise IdentityUnavailable("oauth2-proxy accepted the request but sent no ID token "
                                  "(run it with --set-authorization-header)")
    found = token_claims(authorization[len("Bearer "):])
    user = found.get(claims.user)
    if not isinstance(user, str) or not is_valid_principal(user):
        raise IdentityRefused(f"your sign-in has no usable {claims.user!r} claim (a user name of letters, "
                              "digits and . _ - @ + : /)")
    raw = found.get(claims.groups)
    raw = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    groups = tuple(g for g in raw if isinstance(g, str) and is_valid_principal(g))
    if len(groups) != len(raw):
        dropped = [g for g in raw if g not in groups]
        log.warning("ignoring %d group(s) of %s outside the principal grammar: %s", len(dropped), user,
                    ", ".join(repr(g)[:80] for g in dropped[:5]))
    email = found.get(claims.email)
    return Identity(user, email if isinstance(email, str) else "", groups)


class OAuth2Proxy:
    def __init__(self, auth_url: str, session: aiohttp.ClientSession, claims: Claims = Claims()):
        self.auth_url = auth_url
        self.session = session
        self.claims = claims

    async def identify(self, request_headers: Mapping[str, str]) -> Identity | None:
        """The caller's identity; None when not signed in; IdentityUnavailable when unknowable;
        IdentityRefused when the sign-in names no usable user."""
        headers = forwarded_headers(request_headers)
        if not headers:
            return None  # nothing to authenticate with: no need to ask
        try:
            async with self.session.get(self.auth_url, headers=headers, allow_redirects=False,
                                        timeout=TIMEOUT) as resp:
                await resp.read()
                if resp.status in (401, 403):
                    return None
                if resp.status not in (200, 202):
                    raise IdentityUnavailable(f"oauth2-proxy answered {resp.status}")
                return identity_from_answer(resp.headers, self.claims)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise IdentityUnavailable(f"oauth2-proxy at {self.auth_url} cannot be reached: {e}") from e
