"""A minimal async Kubernetes client for the benchmark harness and the floor (aiohttp, raw JSON).

Token and CA come from a kubeconfig like the local cluster writes (token + certificate-authority-data).
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile

import aiohttp
import yaml


class KClient:
    def __init__(self, kubeconfig: str, limit: int = 64):
        cfg = yaml.safe_load(open(kubeconfig))
        ctx = next(c for c in cfg["contexts"] if c["name"] == cfg["current-context"])["context"]
        cluster = next(c for c in cfg["clusters"] if c["name"] == ctx["cluster"])["cluster"]
        user = next(u for u in cfg["users"] if u["name"] == ctx["user"])["user"]
        self.server = cluster["server"]
        ca = tempfile.NamedTemporaryFile(delete=False, suffix=".crt")
        ca.write(base64.b64decode(cluster["certificate-authority-data"]))
        ca.close()
        self.ssl = ssl.create_default_context(cafile=ca.name)
        self.headers = {"Authorization": f"Bearer {user['token']}"}
        self.limit = limit
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self):
        conn = aiohttp.TCPConnector(ssl=self.ssl, limit=self.limit)
        self.session = aiohttp.ClientSession(self.server, headers=self.headers, connector=conn,
                                             timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
        return self

    async def __aexit__(self, *exc):
        await self.session.close()

    async def request(self, method: str, path: str, body=None, content_type="application/json", params=None):
        data = None if body is None else json.dumps(body)
        async with self.session.request(method, path, data=data, params=params,
                                        headers={"Content-Type": content_type}) as resp:
            text = await resp.text()
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {text[:300]}")
            return json.loads(text) if text else {}

    async def watch(self, path: str, resource_version: str, params=None):
        """Yield (type, object) from a watch starting at resource_version (no bookmarks needed)."""
        q = {"watch": "1", "resourceVersion": resource_version, "allowWatchBookmarks": "true", **(params or {})}
        async with self.session.get(path, params=q) as resp:
            async for line in resp.content:
                if line.strip():
                    ev = json.loads(line)
                    yield ev["type"], ev["object"]

    async def text(self, path: str) -> str:
        async with self.session.get(path) as resp:
            return await resp.text()
