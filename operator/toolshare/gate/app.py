"""`toolshare gate`: the aiohttp service behind every run's auth-url, and the "Shared with me" page.

Stateless apart from what it watches, so any number of replicas can run side by side: each lists
and watches the ToolRuns and RunShares itself (through state/, the same views the operator keeps)
and decides with access.py, the code that renders the Ingresses. No request ever causes a
Kubernetes API call; every request asks oauth2-proxy who the caller is.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from toolshare import access, grant, model
from toolshare.client.config import ApiConfig
from toolshare.gate import metrics, verdict
from toolshare.gate.guards import Guards
from toolshare.gate.identity import (DEFAULT_SESSION_COOKIE, Claims, IdentityRefused, IdentityUnavailable,
                                     OAuth2Proxy, without_session)
from toolshare.gate.page import render_page
from toolshare.gate.shared import shared_with_me
from toolshare.gate.signin import signin_location
from toolshare.gate.watch import Reflector
from toolshare.policy import Policy
from toolshare.settings import Settings
from toolshare.state import views
from toolshare.state.cache import CACHE

log = logging.getLogger("toolshare.gate")
WATCHED = (("toolruns", "ToolRun"), ("runshares", "RunShare"), ("imageshares", "ImageShare"))


@dataclass
class GateConfig:
    auth_url: str  # oauth2-proxy's /oauth2/auth
    signin_url: str = ""  # where the page sends a caller who is not signed in ("" = answer 401)
    kubeconfig: str | None = None
    claims: Claims = Claims()  # which ID-token claims name the user and the groups
    session_cookie: str = DEFAULT_SESSION_COOKIE  # oauth2-proxy's --cookie-name: never reaches a tool
    # The operator's settings (hosts, for the page's URLs) and policy (who may share): the gate
    # re-checks every share's sharer with it, as the operator does.
    settings: Settings = field(default_factory=Settings.from_env)
    policy: Policy = field(default_factory=Policy.from_env)
    # Signs the grant of every allowed request, for the run's guard (grant.py); None: no grants, and
    # no guard can follow this gate.
    grant_key: Ed25519PrivateKey | None = None


class Gate:
    def __init__(self, config: GateConfig):
        self.config = config
        self.reflectors: list[Reflector] = []
        self.tasks: list[asyncio.Task] = []
        self.session: aiohttp.ClientSession | None = None
        self.identity: OAuth2Proxy | None = None
        views.configure(config.settings)
        views.register_sharee_views()
        self.guards = Guards(config.grant_key.public_key(), self._may_stay, self._shares,
                             lambda: self.ready) if config.grant_key else None

    # --- the watched state -----------------------------------------------------------------

    def _feed(self, plural: str, kind: str):
        def changed(namespace: str | None) -> None:
            if self.guards is not None:  # whoever a guard holds may have lost access
                self.guards.changed(namespace)

        def on_replace(items: list[dict]) -> None:
            for item in items:  # a LIST's items carry no apiVersion or kind
                item.setdefault("apiVersion", model.API_VERSION)
                item.setdefault("kind", kind)
            CACHE.replace(plural, items)
            changed(None)

        def on_event(event: str, obj: dict) -> None:
            if event == "DELETED":
                CACHE.drop(plural, obj)
            else:
                try:
                    CACHE.put(plural, obj)
                except Exception:  # noqa: BLE001 - an object the views cannot take grants nothing
                    log.exception("dropping a malformed %s from the gate's memory", kind)
                    CACHE.drop(plural, obj)
            changed((obj.get("metadata") or {}).get("namespace") if plural != "imageshares" else None)

        return on_replace, on_event

    async def start(self, app: web.Application) -> None:
        self.session = aiohttp.ClientSession()
        self.identity = OAuth2Proxy(self.config.auth_url, self.session, self.config.claims)
        api = ApiConfig.load(self.config.kubeconfig)
        self.reflectors = []
        for plural, kind in WATCHED:
            on_replace, on_event = self._feed(plural, kind)
            failed = metrics.WATCH_FAILURES.labels(plural).inc
            self.reflectors.append(Reflector(api, CACHE.sources[plural].path, on_replace=on_replace,
                                             on_event=on_event, on_failure=failed))
        self.tasks = [asyncio.create_task(r.run(self.session)) for r in self.reflectors]

    async def stop(self, app: web.Application) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.session:
            await self.session.close()

    @property
    def ready(self) -> bool:
        """Every watch listed and not failed since: only then may anything be decided."""
        return bool(self.reflectors) and all(r.synced.is_set() for r in self.reflectors)

    # --- handlers --------------------------------------------------------------------------

    def _decide(self, identity: verdict.Identity | None, ns: str, name: str, ep: str, now: dt.datetime) -> int:
        """/check's decision, and the one a guard's people are held to (gate/guards.py)."""
        run = views.run(ns, name)
        shares = views.shares_for(ns, name) if run is not None else []
        runs_by_name = views.runs_for(ns, run, shares) if run is not None else {}
        return verdict.verdict(identity, run, ep, shares, runs_by_name, now, self.config.policy,
                               self._image_shares(run))

    def _may_stay(self, ns: str, name: str, ep: str, user: str, groups: tuple[str, ...], now: dt.datetime) -> bool:
        return self._decide(verdict.Identity(user, "", groups), ns, name, ep, now) == verdict.ALLOWED

    @staticmethod
    def _shares(ns: str, name: str) -> list:
        return views.shares_for(ns, name) if views.run(ns, name) is not None else []

    async def _identify(self, request: web.Request) -> verdict.Identity | None:
        assert self.identity is not None
        return await self.identity.identify(request.headers)

    async def check(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        response = await self._check(request)
        metrics.record(response.status, time.perf_counter() - started)
        return response

    async def _check(self, request: web.Request) -> web.Response:
        if not self.ready:
            return _text(503, "the gate is not in sync with the cluster; refusing until it is")
        ns, name, ep = (request.match_info[k] for k in ("namespace", "run", "endpoint"))
        try:
            identity = await self._identify(request)
        except IdentityUnavailable as e:
            log.error("refusing %s/%s/%s: %s", ns, name, ep, e)
            return _text(503, "cannot verify who you are right now (oauth2-proxy unreachable)")
        except IdentityRefused as e:
            return _text(403, str(e))
        now = dt.datetime.now(dt.timezone.utc)
        status = self._decide(identity, ns, name, ep, now)
        if status == verdict.ALLOWED:
            assert identity is not None
            # The router copies these onto the request to the tool (auth-response-headers): the
            # identity, the caller's own cookies without the sign-in session, and no Authorization
            # (absent here, so the router sends none): the caller's credentials stop at the gate.
            headers = {"X-Auth-Request-User": identity.user, "X-Auth-Request-Email": identity.email,
                       "X-Auth-Request-Groups": ",".join(identity.groups)}
            if cookies := without_session(request.headers.getall("Cookie", []), self.config.session_cookie):
                headers["Cookie"] = cookies
            if self.config.grant_key is not None:  # for the run's guard, which admits nothing without it
                try:
                    headers[grant.HEADER] = grant.make(self.config.grant_key, ns, name, ep, identity.user,
                                                       identity.groups, now.timestamp())
                except ValueError as e:
                    return _text(403, f"{identity.user} cannot be let in: {e}")
            return web.Response(status=202, headers=headers)
        if status == verdict.NOT_SIGNED_IN:
            # A forwardAuth router shows this answer to the browser: send it to sign in.
            if location := signin_location(self.config.settings.signin_url, request.headers):
                return web.Response(status=302, headers={"Location": location})
            return _text(401, "sign in first")
        return _text(403, f"{identity.user} may not use {name}/{ep} in {ns}")

    async def _view(self, request: web.Request) -> tuple[dict | None, web.Response | None]:
        if not self.ready:
            return None, _text(503, "the gate is not in sync with the cluster; refusing until it is")
        try:
            identity = await self._identify(request)
        except IdentityUnavailable:
            return None, _text(503, "cannot verify who you are right now (oauth2-proxy unreachable)")
        except IdentityRefused as e:
            return None, _text(403, str(e))
        if identity is None:
            return None, None
        now = dt.datetime.now(dt.timezone.utc)
        reached = []
        for share in views.shares_naming(identity.user, identity.groups):
            namespace = share["metadata"]["namespace"]
            for run in views.share_runs(namespace, share).values():
                if self._holds_host(run) and access.may_use_image(run, identity.user, identity.groups,
                                                                  self._image_shares(run), self.config.policy):
                    shares = views.shares_for(namespace, run["metadata"]["name"])
                    reached.append((run, shares, views.runs_for(namespace, run, shares)))
        owned = [r for r in views.runs_owned_by(identity.user) if self._holds_host(r)]
        return shared_with_me(identity, owned, reached, self.config.settings, now, self.config.policy), None

    @staticmethod
    def _image_shares(run: dict | None) -> list:
        image = ((run or {}).get("spec") or {}).get("image")
        return views.imageshares_of(image) if isinstance(image, str) and image else []

    def _holds_host(self, run: dict) -> bool:
        """Whether the run holds its host (a later run with the same friendly name has no Ingress)."""
        if model.validate_run(run):
            return False
        host = model.host_for(run, self.config.settings)
        holder = model.host_claims(views.runs_on_host(host), self.config.settings).get(host)
        return holder is not None and holder["metadata"].get("uid") == run["metadata"].get("uid")

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
        metrics.RUNS.set(len(CACHE.views["toolruns_by_key"]))
        metrics.READY.set(1 if self.ready else 0)
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def readyz(self, request: web.Request) -> web.Response:
        runs, shares = len(CACHE.views["toolruns_by_key"]), len(CACHE.views["runshares_by_key"])
        if self.ready:
            return _text(200, f"ok: {runs} runs, {shares} shares")
        waiting = ", ".join(r.path for r in self.reflectors if not r.synced.is_set()) or "start-up"
        return _text(503, f"not in sync with the cluster (listing {waiting})")


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers={"Cache-Control": "no-store"})


def make_apps(config: GateConfig) -> tuple[web.Application, web.Application]:
    """(the app the router and people call: /check and Shared with me; the operations app:
    /healthz, /readyz, /metrics) over one Gate. The second listens on a port of its own, so
    nothing reachable through the router's auth-url or a run's host serves metrics or probes."""
    gate = Gate(config)
    app = web.Application()
    app["gate"] = gate
    app.on_startup.append(gate.start)
    app.on_cleanup.append(gate.stop)
    app.router.add_get("/check/{namespace}/{run}/{endpoint}", gate.check)
    app.router.add_get("/", gate.page)
    app.router.add_get("/shared-with-me", gate.page)
    app.router.add_get("/api/shared-with-me", gate.api)
    if gate.guards is not None:
        app.router.add_get("/guard/{namespace}/{run}", gate.guards.follow)
    ops = web.Application()
    ops.router.add_get("/healthz", gate.healthz)
    ops.router.add_get("/readyz", gate.readyz)
    ops.router.add_get("/metrics", gate.metrics_page)
    return app, ops


async def serve(config: GateConfig, listen: tuple[str, int], ops_listen: tuple[str, int]) -> None:
    app, ops = make_apps(config)
    runners = [web.AppRunner(app, access_log=None), web.AppRunner(ops, access_log=None)]
    for runner, (host, port) in zip(runners, (listen, ops_listen)):
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
    try:
        await asyncio.Event().wait()
    finally:
        for runner in runners:
            await runner.cleanup()


def run_gate(config: GateConfig, listen: tuple[str, int], ops_listen: tuple[str, int],
             log_format: str = "text") -> None:
    from toolshare.logs import configure

    configure(log_format)
    try:
        asyncio.run(serve(config, listen, ops_listen))
    except KeyboardInterrupt:
        pass
