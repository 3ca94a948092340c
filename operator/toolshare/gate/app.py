"""`toolshare gate`: the aiohttp service behind every run's auth-url, and the Toolshare page.

Stateless apart from what it watches, so any number of replicas can run side by side: each lists
and watches the ToolRuns and RunShares itself (through state/, the same views the operator keeps)
and decides with access.py, the code that renders the Ingresses. Every request asks oauth2-proxy
who the caller is. No check ever causes a Kubernetes API call; a share or unshare from the page is
one write, sent as the signed-in person (gate/writes.py), after the anti-CSRF check (gate/csrf.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from toolshare import access, eventloop, grant, model
from toolshare.client.config import ApiConfig
from toolshare.gate import csrf, forms, metrics, owner, verdict
from toolshare.gate.guards import Guards
from toolshare.gate.identity import (DEFAULT_SESSION_COOKIE, Claims, IdentityRefused, IdentityUnavailable,
                                     OAuth2Proxy, without_session)
from toolshare.gate.page import HEADERS, SCRIPT, STYLE, render_page
from toolshare.gate.shared import shared_with_me
from toolshare.gate.signin import signin_location
from toolshare.client.watch import Reflector
from toolshare.gate.writes import Writer
from toolshare.policy import Policy
from toolshare.settings import Settings
from toolshare.sharing import ShareInputError
from toolshare.state import views
from toolshare.state.cache import CACHE, collector_paused

log = logging.getLogger("toolshare.gate")
WATCHED = (("toolruns", "ToolRun"), ("runshares", "RunShare"), ("imageshares", "ImageShare"))
MAX_FORM_BYTES = 64 * 1024
CONFLICT_ATTEMPTS = 3
# How long a write from the page waits for the gate's own watch to show it, so the page it
# redirects to shows the change (a watch event takes milliseconds; this is the bound).
SEEN_TIMEOUT = 10.0
# The longest the cyclic collector stays off for the first LISTs (an API server that cannot be
# listed must not leave it off for good).
FIRST_SYNC_PAUSE = 120.0
NOTICES = {
    "shared": "Shared: the people you added can open the run now.",
    "removed": "Removed: they are refused from their next request on.",
    "image-shared": "Image shared: they may launch runs of it now.",
    "image-removed": "Removed: they may no longer launch new runs of the image.",
}


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
        self.writer: Writer | None = None
        self._tick = asyncio.Event()  # set (and replaced) on every watch event: a write's wait for it
        views.configure(config.settings)
        views.register_sharee_views()
        self.guards = Guards(config.grant_key.public_key(), self._may_stay, self._shares,
                             lambda: self.ready) if config.grant_key else None

    # --- the watched state -----------------------------------------------------------------

    def _feed(self, plural: str, kind: str):
        def changed(namespace: str | None) -> None:
            if self.guards is not None:  # whoever a guard holds may have lost access
                self.guards.changed(namespace)
            self._tick.set()
            self._tick = asyncio.Event()

        class Listing:
            """One LIST into the cache, page by page; until it is finished the reflector is not
            synced, so nothing is decided from the half that is in."""

            def __init__(self) -> None:
                self.replacing = CACHE.replacing(plural)

            def page(self, items: list[dict]) -> None:
                for item in items:  # a LIST's items carry no apiVersion or kind
                    item.setdefault("apiVersion", model.API_VERSION)
                    item.setdefault("kind", kind)
                self.replacing.page(items)

            def finish(self) -> None:
                self.replacing.finish()
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

        return Listing, on_event

    async def start(self, app: web.Application) -> None:
        self.session = aiohttp.ClientSession()
        self.identity = OAuth2Proxy(self.config.auth_url, self.session, self.config.claims)
        api = ApiConfig.load(self.config.kubeconfig)
        self.writer = Writer(api, self.session)
        self.reflectors = []
        for plural, kind in WATCHED:
            listing, on_event = self._feed(plural, kind)
            failed = metrics.WATCH_FAILURES.labels(plural).inc
            self.reflectors.append(Reflector(api, CACHE.sources[plural].path, store=listing,
                                             on_event=on_event, on_failure=failed))
        self.tasks = [asyncio.create_task(r.run(self.session)) for r in self.reflectors]
        self.tasks.append(asyncio.create_task(self._first_sync()))

    async def _first_sync(self) -> None:
        """The collector paused until every kind's first LIST is in, as at the operator's start:
        each page of parsed objects outlived a few young collections and triggered full ones over
        the growing cache (a sixth of a start's CPU at 10,000 runs: BENCHMARKS.md)."""
        with collector_paused():
            try:
                await asyncio.wait_for(asyncio.gather(*(r.synced.wait() for r in self.reflectors)),
                                       FIRST_SYNC_PAUSE)
            except asyncio.TimeoutError:
                log.warning("not in sync after %.0f s; the garbage collector is on again", FIRST_SYNC_PAUSE)

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

    async def _signed_in(self, request: web.Request) -> tuple[verdict.Identity | None, web.Response | None]:
        if not self.ready:
            return None, _text(503, "the gate is not in sync with the cluster; refusing until it is")
        try:
            return await self._identify(request), None
        except IdentityUnavailable:
            return None, _text(503, "cannot verify who you are right now (oauth2-proxy unreachable)")
        except IdentityRefused as e:
            return None, _text(403, str(e))

    def _shared_view(self, identity: verdict.Identity, with_owned: bool = True) -> dict:
        """Shared with me; with the runs the user owns too for the JSON API (the page lists them in
        the owner's view, paged, instead)."""
        now = dt.datetime.now(dt.timezone.utc)
        reached = []
        for share in views.shares_naming(identity.user, identity.groups):
            namespace = share["metadata"]["namespace"]
            for run in views.share_runs(namespace, share).values():
                if self._holds_host(run) and access.may_use_image(run, identity.user, identity.groups,
                                                                  self._image_shares(run), self.config.policy):
                    shares = views.shares_for(namespace, run["metadata"]["name"])
                    reached.append((run, shares, views.runs_for(namespace, run, shares)))
        owned = [r for r in views.runs_owned_by(identity.user) if self._holds_host(r)] if with_owned else []
        view = shared_with_me(identity, owned, reached, self.config.settings, now, self.config.policy)
        view["imagesSharedWithMe"] = owner.images_shared_with(identity, views.imageshares())
        return view

    def _owner_view(self, identity: verdict.Identity, query: str, page: int) -> dict:
        def shares_of(run: dict):
            ns, name = run["metadata"]["namespace"], run["metadata"]["name"]
            shares = views.shares_for(ns, name)
            return shares, views.runs_for(ns, run, shares)

        all_images = views.imageshares()
        return owner.owner_view(identity, views.run_keys_owned_by(identity.user), views.run, shares_of,
                                [s for s in all_images if (s.get("spec") or {}).get("owner") == identity.user],
                                all_images, self.config.settings, dt.datetime.now(dt.timezone.utc),
                                self.config.policy, query=query, page=page)

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

    def _csrf_token(self, request: web.Request, identity: verdict.Identity) -> str:
        cred = csrf.credential(request.headers, request.headers.getall("Cookie", []), self.config.session_cookie)
        return csrf.token(cred, identity.user) if cred else ""

    def _render(self, request: web.Request, identity: verdict.Identity, status: int = 200, notice: str = "",
                error: str = "", form_for: tuple[str, str] | None = None, form: dict | None = None) -> web.Response:
        where = request.get("form") or request.query  # a form carries the search and page it came from
        try:
            page = int(str(where.get("page") or "1"))
        except ValueError:
            page = 1
        html = render_page(self._shared_view(identity, with_owned=False), self._owner_view(identity, str(where.get("q") or "")[:200],
                                                                          page),
                           self._csrf_token(request, identity), notice, error, form_for, form)
        return web.Response(status=status, text=html, content_type="text/html", headers=HEADERS)

    async def page(self, request: web.Request) -> web.Response:
        identity, error = await self._signed_in(request)
        if error is not None:
            return error
        if identity is None:
            if self.config.signin_url:
                raise web.HTTPFound(self.config.signin_url)
            return _text(401, "sign in first")
        return self._render(request, identity, notice=NOTICES.get(request.query.get("done", ""), ""))

    async def api(self, request: web.Request) -> web.Response:
        identity, error = await self._signed_in(request)
        if error is not None:
            return error
        if identity is None:
            return web.json_response({"error": "not signed in"}, status=401)
        return web.Response(text=json.dumps(self._shared_view(identity), indent=1), content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    # --- writes from the page --------------------------------------------------------------

    async def _writer_gate(self, request: web.Request) -> tuple[verdict.Identity | None, dict, web.Response | None]:
        """Who may write: signed in, from the page's own origin, with the form's token."""
        identity, error = await self._signed_in(request)
        if error is not None:
            return None, {}, error
        if identity is None:
            return None, {}, _text(401, "sign in first")
        if (why := csrf.cross_site(request.headers, request.host)) is not None:
            return None, {}, _text(403, f"refused: {why}")
        data = await request.post()
        form = {k: (data.getall(k) if k == "endpoints" else data.get(k)) for k in data.keys()}
        cred = csrf.credential(request.headers, request.headers.getall("Cookie", []), self.config.session_cookie)
        if not csrf.valid(form.get(csrf.FIELD), cred, identity.user):
            return None, {}, _text(403, "refused: the form's token is missing or not from your session; "
                                        "reload the page and try again")
        request["form"] = form
        return identity, form, None

    async def _apply(self, request: web.Request, identity: verdict.Identity,
                     write: forms.Write | Callable[[], forms.Write], done: str, anchor: str,
                     form_for: tuple[str, str] | None = None, form: dict | None = None) -> web.Response:
        """Send the write as the person; a builder is asked again after a conflict (its precondition
        named a resourceVersion an unrelated status write moved on), up to CONFLICT_ATTEMPTS times."""
        assert self.writer is not None
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                sent = write() if callable(write) else write
            except ShareInputError as e:
                return self._render(request, identity, 409, error=str(e), form_for=form_for, form=form)
            outcome = await self.writer.send(sent, identity)
            if outcome.status != 409 or not callable(write) or attempt == CONFLICT_ATTEMPTS:
                break
            await self._next_event(1.0)
        if not outcome.ok:
            status = outcome.status if 400 <= outcome.status < 500 else 502
            return self._render(request, identity, status, error=f"Could not {sent.what}: {outcome.message}",
                                form_for=form_for, form=form)
        await self._seen(sent, outcome.obj)
        where = request.get("form") or {}
        back = {"q": str(where.get("q") or ""), "page": str(where.get("page") or "1"), "done": done}
        raise web.HTTPSeeOther(f"/?{urlencode(back)}#{anchor}")

    async def _next_event(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._tick.wait(), timeout)
        except TimeoutError:
            pass

    async def _seen(self, write: forms.Write, stored: dict | None) -> None:
        """Until the gate's watch shows the write (the next page load then shows it too)."""
        def shown() -> bool:
            if stored is None:  # a delete
                return self._cached(write.plural, write.namespace, write.name or "") is None
            meta = stored.get("metadata") or {}
            cached = self._cached(write.plural, write.namespace, meta.get("name", ""))
            return cached is not None and cached["metadata"].get("resourceVersion") == meta.get("resourceVersion")

        deadline = time.monotonic() + SEEN_TIMEOUT
        while not shown() and (left := deadline - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(self._tick.wait(), left)
            except TimeoutError:
                log.warning("%s: not seen by the gate's watch after %.0f s", write.what, SEEN_TIMEOUT)

    @staticmethod
    def _cached(plural: str, namespace: str, name: str) -> dict | None:
        if plural == "runshares":
            return views.share(namespace, name)
        return next((s for s in views.imageshares() if (s["metadata"]["namespace"], s["metadata"]["name"])
                     == (namespace, name)), None)

    async def add_run_share(self, request: web.Request) -> web.Response:
        identity, form, refused = await self._writer_gate(request)
        if refused is not None:
            return refused
        assert identity is not None
        ns, name = request.match_info["namespace"], request.match_info["run"]
        run = views.run(ns, name)
        if run is None:
            return self._render(request, identity, 404, error=f"There is no run {name!r} in {ns!r}.")
        key = (ns, name)
        try:
            write = forms.add_run_share(form, run, lambda n: views.share(ns, n) is not None,
                                        dt.datetime.now(dt.timezone.utc))
        except ShareInputError as e:
            return self._render(request, identity, 422, error=str(e), form_for=key, form=form)
        return await self._apply(request, identity, write, "shared", f"run-{ns}-{name}", key, form)

    async def remove_from_share(self, request: web.Request) -> web.Response:
        identity, form, refused = await self._writer_gate(request)
        if refused is not None:
            return refused
        assert identity is not None
        plural = "runshares" if request.path.startswith("/runshares/") else "imageshares"
        ns, name = request.match_info["namespace"], request.match_info["name"]
        share = self._cached(plural, ns, name)
        if share is None:
            return self._render(request, identity, 404, error=f"{name!r} in {ns!r} is already gone.")
        generation = share["metadata"].get("generation")
        if form.get("gen") != str(generation):
            return self._render(request, identity, 409, error=f"{name!r} changed since this page was loaded: "
                                                              "nothing was removed; look again and retry")
        principal, kind = form.get("principal") or "", form.get("kind") or ""

        def build() -> forms.Write:
            # From the share as the gate holds it now (a status write by the operator moves its
            # resourceVersion, which a delete's precondition names); refused if its spec moved on.
            now = self._cached(plural, ns, name)
            if now is None or now["metadata"].get("generation") != generation:
                raise ShareInputError(f"{name!r} changed since this page was loaded: nothing was removed; "
                                      "look again and retry")
            return forms.remove(now, kind, principal) if principal else forms.delete(now)

        anchor = (f"run-{ns}-{(share.get('spec') or {}).get('runRef', {}).get('name', '')}"
                  if plural == "runshares" else "h-images")
        return await self._apply(request, identity, build, "removed" if plural == "runshares" else "image-removed",
                                 anchor)

    async def add_image_share(self, request: web.Request) -> web.Response:
        identity, form, refused = await self._writer_gate(request)
        if refused is not None:
            return refused
        assert identity is not None
        try:
            write = forms.add_image_share(form, identity.user)
        except ShareInputError as e:
            return self._render(request, identity, 422, error=str(e), form_for=("image", ""), form=form)
        return await self._apply(request, identity, write, "image-shared", "h-images", ("image", ""), form)

    @staticmethod
    async def asset(request: web.Request) -> web.Response:
        body, kind = {"toolshare.css": (STYLE, "text/css"), "toolshare.js": (SCRIPT, "text/javascript")}[
            request.match_info["name"]]
        return web.Response(text=body, content_type=kind, headers={
            "Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"})

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
    app = web.Application(client_max_size=MAX_FORM_BYTES)
    app["gate"] = gate
    app.on_startup.append(gate.start)
    app.on_cleanup.append(gate.stop)
    app.router.add_get("/check/{namespace}/{run}/{endpoint}", gate.check)
    app.router.add_get("/", gate.page)
    app.router.add_get("/shared-with-me", gate.page)
    app.router.add_get("/api/shared-with-me", gate.api)
    app.router.add_post("/runs/{namespace}/{run}/shares", gate.add_run_share)
    app.router.add_post("/runshares/{namespace}/{name}/remove", gate.remove_from_share)
    app.router.add_post("/imageshares", gate.add_image_share)
    app.router.add_post("/imageshares/{namespace}/{name}/remove", gate.remove_from_share)
    app.router.add_get(r"/static/{name:toolshare\.(css|js)}", gate.asset)
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
        eventloop.run(serve(config, listen, ops_listen))
    except KeyboardInterrupt:
        pass
