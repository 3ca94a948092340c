"""Who is calling, according to oauth2-proxy's /oauth2/auth (and nobody else).

Only the request's Cookie and Authorization headers are forwarded: any X-Auth-Request-* header
the client sent itself never reaches a decision. oauth2-proxy answers 202 with the identity in
X-Auth-Request-User/-Email/-Groups/-Preferred-Username, or 401 without a valid session or token.

Which header names the Toolshare principal is configurable. For bearer tokens oauth2-proxy puts
the token's opaque `sub` in X-Auth-Request-User and the --oidc-email-claim in -Email; Toolshare
principals are user names as Kubernetes knows them, so the default is the preferred username,
falling back to X-Auth-Request-User when oauth2-proxy sends none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import aiohttp

from toolshare.gate.verdict import Identity

FORWARDED = ("Cookie", "Authorization")
DEFAULT_SESSION_COOKIE = "_oauth2_proxy"  # oauth2-proxy's --cookie-name
DEFAULT_USER_HEADER = "X-Auth-Request-Preferred-Username"
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


def identity_from_headers(headers: Mapping[str, str], user_header: str = DEFAULT_USER_HEADER) -> Identity:
    """The identity in oauth2-proxy's 202 answer; groups are comma-separated."""
    user = (headers.get(user_header) or headers.get("X-Auth-Request-User") or "").strip()
    if not user:
        raise IdentityUnavailable("oauth2-proxy accepted the request but named no user "
                                  "(is --set-xauthrequest set?)")
    groups = tuple(g for g in (s.strip() for s in (headers.get("X-Auth-Request-Groups") or "").split(",")) if g)
    return Identity(user, (headers.get("X-Auth-Request-Email") or "").strip(), groups)


class OAuth2Proxy:
    def __init__(self, auth_url: str, session: aiohttp.ClientSession,
                 user_header: str = DEFAULT_USER_HEADER):
        self.auth_url = auth_url
        self.session = session
        self.user_header = user_header

    async def identify(self, request_headers: Mapping[str, str]) -> Identity | None:
        """The caller's identity; None when not signed in; IdentityUnavailable when unknowable."""
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
                return identity_from_headers(resp.headers, self.user_header)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise IdentityUnavailable(f"oauth2-proxy at {self.auth_url} cannot be reached: {e}") from e
