"""`toolshare gate`: the aiohttp service behind every run's auth-url, and the "Shared with me" page.

Stateless apart from what it watches, so any number of replicas can run side by side: each lists
and watches the operator's Ingresses (decisions) and the RunShares (page details) itself. No
request ever causes a Kubernetes API call; every request asks oauth2-proxy who the caller is.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from toolshare import model
from toolshare.client.config import ApiConfig
from toolshare.gate import allowlist, metrics
from toolshare.gate.identity import DEFAULT_USER_HEADER, IdentityUnavailable, OAuth2Proxy
from toolshare.gate.page import render_page
from toolshare.gate.shared import shared_with_me
from toolshare.gate.watch import Reflector

log = logging.getLogger("toolshare.gate")
INGRESSES = "/apis/networking.k8s.io/v1/ingresses"
RUNSHARES = "/apis/toolshare.dev/v1alpha1/runshares"
MANAGED_SELECTOR = f"{model.LABEL_MANAGED_BY}={model.MANAGED_BY}"


@dataclass
class GateConfig:
    auth_url: str  # oauth2-proxy's /oauth2/auth
    signin_url: str = ""  # where the page sends a caller who is not signed in ("" = answer 401)
    kubeconfig: str | None = None
    user_header: str = DEFAULT_USER_HEADER  # which oauth2-proxy header names the principal


class Gate:
    def __init__(self, config: GateConfig):
        self.config = config
        self.store = allowlist.Store()
        self.shares: dict[tuple[str, str], dict] = {}
        self.reflectors: list[Reflector] = []
        self.tasks: list[asyncio.Task] = []
        self.session: aiohttp.ClientSession | None = None
        self.identity: OAuth2Proxy | None = None

    # --- the watched state -----------------------------------------------------------------

    def _ingress_event(self, kind: str, obj: dict) -> None:
        (self.store.delete if kind == "DELETED" else self.store.upsert)(obj)

    def _replace_shares(self, items: list[dict]) -> None:
        self.shares = {_key(s): _slim(s) for s in items}

    def _share_event(self, kind: str, obj: dict) -> None:
        if kind == "DELETED":
            self.shares.pop(_key(obj), None)
        else:
            self.shares[_key(obj)] = _slim(obj)

    async def start(self, app: web.Application) -> None:
        self.session = aiohttp.ClientSession()
        self.identity = OAuth2Proxy(self.config.auth_url, self.session, self.config.user_header)
        api = ApiConfig.load(self.config.kubeconfig)
        self.reflectors = [
            Reflector(api, INGRESSES, MANAGED_SELECTOR, on_replace=self.store.replace,
                      on_event=self._ingress_event),
            Reflector(api, RUNSHARES, on_replace=self._replace_shares, on_event=self._share_event),
        ]
        self.tasks = [asyncio.create_task(r.run(self.session)) for r in self.reflectors]

    async def stop(self, app: web.Application) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.session:
            await self.session.close()

    @property
    def ready(self) -> bool:
        return bool(self.reflectors) and all(r.synced.is_set() for r in self.reflectors)

    # --- handlers --------------------------------------------------------------------------

    async def _identify(self, request: web.Request) -> allowlist.Identity | None:
        assert self.identity is not None
        return await self.identity.identify(request.headers)

    async def check(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        response = await self._check(request)
        metrics.record(response.status, time.perf_counter() - started)
        return response

    async def _check(self, request: web.Request) -> web.Response:
        if not self.ready:
            return _text(503, "the gate has not loaded the access lists yet")
        ns, run, ep = (request.match_info[k] for k in ("namespace", "run", "endpoint"))
        try:
            identity = await self._identify(request)
        except IdentityUnavailable as e:
            log.error("refusing %s/%s/%s: %s", ns, run, ep, e)
            return _text(503, "cannot verify who you are right now (oauth2-proxy unreachable)")
        entry = self.store.get(ns, run, ep)
        status = allowlist.verdict(entry, identity)
        if status == allowlist.ALLOWED:
            assert identity is not None
            return web.Response(status=202, headers={
                "X-Auth-Request-User": identity.user,
                "X-Auth-Request-Email": identity.email,
                "X-Auth-Request-Groups": ",".join(identity.groups)})
        if status == allowlist.NOT_SIGNED_IN:
            return _text(401, "sign in first")
        if status == allowlist.UNKNOWN:
            return _text(404, f"no endpoint {ep!r} of a run {run!r} in namespace {ns!r}")
        return _text(403, f"{identity.user} may not use {run}/{ep} in {ns}")

    async def _view(self, request: web.Request) -> tuple[dict | None, web.Response | None]:
        if not self.ready:
            return None, _text(503, "the gate has not loaded the access lists yet")
        try:
            identity = await self._identify(request)
        except IdentityUnavailable:
            return None, _text(503, "cannot verify who you are right now (oauth2-proxy unreachable)")
        if identity is None:
            return None, None
        now = dt.datetime.now(dt.timezone.utc)
        return shared_with_me(identity, self.store.entries(), self.shares.values(), now), None

    async def page(self, request: web.Request) -> web.Response:
        view, error = await self._view(request)
        if error is not None:
            return error
        if view is None:
            if self.config.signin_url:
                raise web.HTTPFound(self.config.signin_url)
            return _text(401, "sign in first")
        return web.Response(text=render_page(view), content_type="text/html",
                            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                                     "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})

    async def api(self, request: web.Request) -> web.Response:
        view, error = await self._view(request)
        if error is not None:
            return error
        if view is None:
            return web.json_response({"error": "not signed in"}, status=401)
        return web.Response(text=json.dumps(view, indent=1), content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    async def healthz(self, request: web.Request) -> web.Response:
        return _text(200, "ok")

    async def metrics_page(self, request: web.Request) -> web.Response:
        metrics.ENDPOINTS.set(len(self.store))
        metrics.READY.set(1 if self.ready else 0)
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.ready:
            return _text(200, f"ok: {len(self.store)} endpoints, {len(self.shares)} shares")
        return _text(503, "waiting for the initial list of Ingresses and RunShares")


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers={"Cache-Control": "no-store"})


def _key(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def _slim(share: dict) -> dict:
    """What the page needs of a RunShare (no managedFields)."""
    meta = share.get("metadata") or {}
    return {"metadata": {k: meta.get(k) for k in ("name", "namespace", "creationTimestamp", "annotations")},
            "spec": share.get("spec") or {}, "status": share.get("status") or {}}


def make_app(config: GateConfig) -> web.Application:
    gate = Gate(config)
    app = web.Application()
    app["gate"] = gate
    app.on_startup.append(gate.start)
    app.on_cleanup.append(gate.stop)
    app.router.add_get("/check/{namespace}/{run}/{endpoint}", gate.check)
    app.router.add_get("/healthz", gate.healthz)
    app.router.add_get("/readyz", gate.readyz)
    app.router.add_get("/metrics", gate.metrics_page)
    app.router.add_get("/", gate.page)
    app.router.add_get("/shared-with-me", gate.page)
    app.router.add_get("/api/shared-with-me", gate.api)
    return app


def run_gate(config: GateConfig, host: str, port: int, log_format: str = "text") -> None:
    from toolshare.logs import configure

    configure(log_format)
    web.run_app(make_app(config), host=host, port=port, access_log=None, print=None)
