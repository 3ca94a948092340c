"""A tiny OIDC issuer for development and tests: discovery, JWKS, and RS256 tokens it signs.

It stands in for the organisation's identity provider so a real oauth2-proxy can verify real
signed bearer tokens on loopback. Tests use a fresh key that is never written anywhere. `toolshare
dev` keeps its issuer in the cluster directory instead (`persistent`: key, key id, URL and client
id in one 0600 file, reused on the next start), so `toolshare dev token USER` can mint, from
another terminal, a token oauth2-proxy accepts. The users mirror the local control plane's
identities (alice, bob, carol) plus dave, who is in no group anyone shares with; any other name
gets a token too, with no groups unless given.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
import uuid
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
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
                 email_domain: str = "toolshare.test", key: rsa.RSAPrivateKey | None = None,
                 kid: str | None = None):
        self.host, self.port, self.client_id, self.email_domain = host, port, client_id, email_domain
        self.key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = kid or uuid.uuid4().hex[:16]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- kept in a file (toolshare dev) -------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> "DevIssuer":
        """The issuer `save` wrote: it mints tokens the served one would, without serving."""
        data = json.loads(Path(path).read_text())
        key = serialization.load_pem_private_key(data["key"].encode(), password=None)
        host, _, port = data["issuer"].removeprefix("http://").rpartition(":")
        return cls(host, int(port), data["clientId"], data["emailDomain"], key, data["kid"])

    def save(self, path: Path) -> None:
        """Write key, key id, issuer URL, client id and e-mail domain to `path`, readable only by
        its owner (created 0600, never wider, then renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        data = {"issuer": self.url, "clientId": self.client_id, "emailDomain": self.email_domain,
                "kid": self.kid, "key": pem}
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)

    @classmethod
    def persistent(cls, path: Path, host: str = "127.0.0.1") -> "DevIssuer":
        """Serve the issuer kept at `path` (made there on first use) on its recorded port if that is
        free, so tokens minted before a restart stay valid; else on a new port (the file follows)."""
        path = Path(path)
        try:
            issuer = cls.load(path)
        except (OSError, ValueError, KeyError):  # none yet, or unreadable: a new key
            issuer = cls(host)
        try:
            issuer.start()
        except OSError:  # the recorded port is taken: a new URL, so earlier tokens no longer verify
            issuer.port = 0
            issuer.start()
        issuer.save(path)
        return issuer

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
        failed: list[BaseException] = []

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(self.serve())
            except BaseException as e:  # the port is taken, say: the caller decides
                failed.append(e)
                if self._runner is not None:
                    self._loop.run_until_complete(self._runner.cleanup())
                started.set()
                self._loop.close()
                self._loop = None
                return
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=main, name="devissuer", daemon=True)
        self._thread.start()
        if not started.wait(30):
            raise RuntimeError("the dev OIDC issuer did not start")
        if failed:
            self._thread.join(5)
            raise failed[0]
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
