"""Where /check sends a caller who is not signed in, when the router cannot do it itself.

ingress-nginx turns the gate's 401 into a redirect to `auth-signin`. Routers whose external auth is
a forwardAuth (Traefik's, which ignores `auth-signin`) pass the gate's answer to the browser as it is:
for them the gate answers 302 to the sign-in URL, filled in from the X-Forwarded-* headers the router
sets. Only the router's headers are read (Traefik replaces what a client sends), and whatever they
say changes nothing but where an unauthenticated caller is sent: oauth2-proxy checks `rd` itself.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping

_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$")
# ingress-nginx's variables, as the operator's default auth-signin uses them (settings.py).
_REQUEST = ("$escaped_request_uri", "$request_uri")


def signin_location(signin_url: str, headers: Mapping[str, str]) -> str | None:
    """The sign-in URL for this request, or None when the gate should answer 401: an nginx-style
    router (it sends X-Original-URL and redirects itself), no sign-in URL, or no usable headers."""
    if not signin_url or "X-Original-URL" in headers:
        return None
    host, uri = headers.get("X-Forwarded-Host", ""), headers.get("X-Forwarded-Uri", "")
    scheme = headers.get("X-Forwarded-Proto", "http")
    if not _HOST.fullmatch(host) or not uri.startswith("/") or scheme not in ("http", "https"):
        return None
    escaped = urllib.parse.quote(uri, safe="")
    url = signin_url.replace("$scheme", scheme).replace("$http_host", host).replace("$host", host)
    for variable in _REQUEST:
        url = url.replace(variable, escaped)
    if "rd=" not in url:
        url += ("&" if "?" in url else "?") + "rd=" + urllib.parse.quote(f"{scheme}://{host}{uri}", safe="")
    return url
