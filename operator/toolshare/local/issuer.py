"""A tiny OIDC issuer for development and tests: discovery, JWKS, and RS256 tokens it signs.

It stands in for the organisation's identity provider so a real oauth2-proxy can verify real
signed bearer tokens on loopback. The key is generated at start and never written anywhere.
The users mirror the local control plane's identities (alice, bob, carol) plus dave, who is in
no group anyone shares with.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

CLIENT_ID = "toolshare"
USERS: dict[str, tuple[str, ...]] = {
    "alice": ("lab", "data-science"),
    "bob": ("lab",),
    "carol": ("guests",),
    "dave": ("visitors",),
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64_int(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class DevIssuer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, client_id: str = CLIENT_ID,
                 email_domain: str = "toolshare.test"):
        self.host, self.port, self.client_id, self.email_domain = host, port, client_id, email_domain
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex[:16]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- tokens ----------------------------------------------------------------------------

    def sign(self, claims: dict) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"

    def token(self, user: str, groups: tuple[str, ...] | None = None, ttl: int = 3600, **extra) -> str:
        """A signed ID token for `user` (groups default to USERS), valid for `ttl` seconds."""
        now = int(time.time())
        claims = {"iss": self.url, "aud": self.client_id, "sub": f"user-{user}", "iat": now,
                  "nbf": now - 5, "exp": now + ttl, "preferred_username": user,
                  "email": f"{user}@{self.email_domain}", "email_verified": True,
                  "groups": list(USERS.get(user, ()) if groups is None else groups), **extra}
        return self.sign(claims)

    def jwks(self) -> dict:
        numbers = self.key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                          "n": _b64_int(numbers.n), "e": _b64_int(numbers.e)}]}

    def discovery(self) -> dict:
        return {"issuer": self.url, "jwks_uri": f"{self.url}/jwks",
                "authorization_endpoint": f"{self.url}/authorize", "token_endpoint": f"{self.url}/token",
                "userinfo_endpoint": f"{self.url}/userinfo", "response_types_supported": ["code"],
                "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile", "groups"],
                "claims_supported": ["sub", "email", "preferred_username", "groups"]}

    # --- serving ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        async def discovery(request: web.Request) -> web.Response:
            return web.json_response(self.discovery())

        async def jwks(request: web.Request) -> web.Response:
            return web.json_response(self.jwks())

        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", discovery)
        app.router.add_get("/jwks", jwks)
        return app

    async def serve(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def start(self) -> "DevIssuer":
        """Serve in a background thread (its own event loop); returns once it listens."""
        started = threading.Event()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.serve())
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=main, name="devissuer", daemon=True)
        self._thread.start()
        if not started.wait(30):
            raise RuntimeError("the dev OIDC issuer did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
