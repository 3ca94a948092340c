"""`toolshare guard`: in the run's own Pod, in front of each HTTP endpoint of the tool.

The router asks the gate once per request; a websocket, a long poll or a download is one request,
so without this an unshare would leave it open for hours. The guard:

- admits a request only with a grant the gate signed for this run and endpoint (grant.py) and
  strips it, so a request that did not come through the gate gets nothing even where the
  NetworkPolicy is missing, and the tool never sees the grant;
- keeps a websocket to the gate (`/guard/<namespace>/<run>`) and shows it one grant per person it
  holds connections for; the gate re-decides for them whenever the run, its shares or the time (an
  expiry) change, and names those who may no longer be there;
- closes every connection of theirs at once (websockets with close code 1008, everything else by
  cutting the TCP connection) and refuses the grants the gate made before that moment;
- fails closed: without the gate it refuses new requests (503), closes what is open once the gate
  has been gone for the grace period, and is not Ready, which the run's ToolReady condition shows.

It holds no Kubernetes credentials and only the gate's public key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from toolshare import eventloop, grant
from toolshare.guard.config import GuardConfig, GuardEndpoint

log = logging.getLogger("toolshare.guard")

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "host"})
WEBSOCKET_HANDSHAKE = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
                                 "sec-websocket-accept", "sec-websocket-protocol"})
GRANT = grant.HEADER.lower()
Identity = tuple[str, str, tuple[str, ...]]


IDENTITY = {"x-auth-request-user", "x-auth-request-groups"}


def forwarded(headers, found: grant.Grant) -> list[tuple[str, str]]:
    """The request's headers for the tool: no hop-by-hop header, never the grant, and who is
    calling as the grant says (the router sets the same from the gate's answer; a request that
    reached the guard some other way with a grant cannot claim anyone else)."""
    kept = [(k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP | IDENTITY and k.lower() != GRANT]
    return kept + [("X-Auth-Request-User", found.user), ("X-Auth-Request-Groups", ",".join(found.groups))]


class Guard:
    def __init__(self, config: GuardConfig, clock: Callable[[], float] = time.time):
        self.config = config
        self.public = grant.load_public(config.public_key)
        self.clock = clock
        self.held: dict[Identity, set[Callable[[], None]]] = {}  # who has what open: their closers
        self.grants: dict[Identity, str] = {}  # the newest grant of each, shown to the gate
        self.revoked: dict[Identity, int] = {}  # when the gate said no (ms): older grants admit nothing
        self.gate: aiohttp.ClientWebSocketResponse | None = None
        self.session: aiohttp.ClientSession | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task] = []

    @property
    def following(self) -> bool:
        return self.gate is not None and not self.gate.closed

    # --- admitting a request ----------------------------------------------------------------

    def admit(self, request: web.Request, endpoint: GuardEndpoint) -> grant.Grant | web.Response:
        token = request.headers.get(grant.HEADER, "")
        try:
            found = grant.admit(self.public, token, self.config.namespace, self.config.run, endpoint.name, self.clock())
        except grant.GrantRefused as e:
            return _text(403, f"refused by the run's guard: {e}")
        if not self.following:
            return _text(503, "the run's guard cannot reach the gate; refusing until it can")
        if found.issued <= self.revoked.get(found.identity, -1):
            return _text(403, "refused by the run's guard: access was revoked")
        return found

    def hold(self, found: grant.Grant, token: str, close: Callable[[], None]) -> Callable[[], None]:
        """Remember an open connection of `found`'s person; returns what forgets it."""
        identity = found.identity
        new = identity not in self.grants
        self.grants[identity] = token
        self.held.setdefault(identity, set()).add(close)
        if new:
            self._tell_gate([token])

        def release() -> None:
            closers = self.held.get(identity)
            if closers is not None:
                closers.discard(close)
                if not closers:
                    del self.held[identity]
                    self.grants.pop(identity, None)
        return release

    # --- the gate ---------------------------------------------------------------------------

    def _tell_gate(self, tokens: list[str]) -> None:
        if tokens and self.following:
            assert self.gate is not None
            asyncio.ensure_future(self.gate.send_str(json.dumps({"hold": tokens})))

    def on_gate(self, message: dict) -> None:
        at = message.get("at")
        for item in message.get("revoked") or []:
            try:
                endpoint, user, groups = item
                identity: Identity = (str(endpoint), str(user), tuple(str(g) for g in groups))
            except (TypeError, ValueError):
                continue
            self.revoked[identity] = at if isinstance(at, int) else grant.ms(self.clock())
            self.grants.pop(identity, None)
            closers = self.held.pop(identity, set())
            log.info("access of %s to %s revoked: closing %d connection(s)", identity[1], identity[0], len(closers))
            for close in closers:
                close()

    def close_all(self, why: str) -> None:
        held, self.held, self.grants = self.held, {}, {}
        count = sum(len(c) for c in held.values())
        if count:
            log.warning("closing %d connection(s): %s", count, why)
        for closers in held.values():
            for close in closers:
                close()

    async def follow(self) -> None:
        """Keep the websocket to the gate; on loss, refuse new requests and start the grace period."""
        assert self.session is not None
        url = f"{self.config.gate_url}/guard/{self.config.namespace}/{self.config.run}"
        backoff = 0.1
        while True:
            try:
                async with self.session.ws_connect(url, heartbeat=5.0, timeout=aiohttp.ClientWSTimeout(ws_close=2)) as ws:
                    self.gate = ws
                    if self._grace is not None:
                        self._grace.cancel()
                        self._grace = None
                    log.info("following the gate at %s", url)
                    backoff = 0.1
                    await ws.send_str(json.dumps({"hold": list(self.grants.values())}))
                    async for msg in ws:
                        if msg.type == WSMsgType.TEXT:
                            try:
                                self.on_gate(json.loads(msg.data))
                            except ValueError:
                                log.error("the gate sent something that is not JSON; ignoring it")
                        elif msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR):
                            break
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                log.warning("cannot follow the gate at %s: %s", url, e)
            self.gate = None
            if self._grace is None and self.held:
                self._grace = asyncio.get_running_loop().call_later(
                    self.config.grace, self.close_all, "the gate has been unreachable for the grace period")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    # --- proxying ---------------------------------------------------------------------------

    def handler(self, endpoint: GuardEndpoint):
        async def handle(request: web.Request) -> web.StreamResponse:
            found = self.admit(request, endpoint)
            if isinstance(found, web.Response):
                return found
            token = request.headers[grant.HEADER]
            if request.headers.get("Upgrade", "").lower() == "websocket":
                return await self._websocket(request, endpoint, found, token)
            return await self._http(request, endpoint, found, token)
        return handle

    async def _http(self, request: web.Request, endpoint: GuardEndpoint, found: grant.Grant,
                    token: str) -> web.StreamResponse:
        assert self.session is not None
        transport = request.transport
        release = self.hold(found, token, lambda: transport.abort() if transport else None)
        try:
            async with self.session.request(
                    request.method, f"{_scheme(endpoint)}://127.0.0.1:{endpoint.tool_port}{request.rel_url}",
                    headers=forwarded(request.headers, found), data=request.content if request.body_exists else None,
                    allow_redirects=False, auto_decompress=False, ssl=False) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=[
                    (k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP])
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except aiohttp.ClientConnectionError as e:
            if request.transport is None or request.transport.is_closing():
                raise  # cut by a revocation or by the client: nothing to answer
            return _text(502, f"the tool does not answer on port {endpoint.tool_port}: {e}")
        finally:
            release()

    async def _websocket(self, request: web.Request, endpoint: GuardEndpoint, found: grant.Grant,
                         token: str) -> web.StreamResponse:
        assert self.session is not None
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        headers = [(k, v) for k, v in forwarded(request.headers, found) if k.lower() not in WEBSOCKET_HANDSHAKE]
        try:
            upstream = await self.session.ws_connect(
                f"{_scheme(endpoint).replace('http', 'ws')}://127.0.0.1:{endpoint.tool_port}{request.rel_url}",
                headers=headers, protocols=protocols, autoping=False, max_msg_size=0, ssl=False)
        except aiohttp.WSServerHandshakeError as e:
            return _text(e.status if 400 <= e.status < 600 else 502, "the tool refused the websocket")
        except aiohttp.ClientError as e:
            return _text(502, f"the tool does not answer on port {endpoint.tool_port}: {e}")
        client = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else (),
                                       autoping=False, max_msg_size=0)
        await client.prepare(request)
        loop = asyncio.get_running_loop()

        def revoke() -> None:
            loop.create_task(_close_both(client, upstream, WSCloseCode.POLICY_VIOLATION, b"access revoked"))
        release = self.hold(found, token, revoke)
        try:
            await asyncio.gather(_pump(client, upstream), _pump(upstream, client))
        finally:
            release()
            await _close_both(client, upstream, WSCloseCode.OK, b"")
        return client

    # --- the process ------------------------------------------------------------------------

    async def ready(self, request: web.Request) -> web.Response:
        return _text(200, "ok") if self.following else _text(503, "not following the gate")

    async def live(self, request: web.Request) -> web.Response:
        return _text(200, "ok")

    async def serve(self) -> None:
        # No pool limit: every open websocket and download holds one connection to the tool for its
        # whole life (aiohttp's default of 100 made the 101st wait for a free one, forever).
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                             timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        runners = []
        try:
            for endpoint in self.config.endpoints:
                app = web.Application(client_max_size=0)
                app.router.add_route("*", "/{tail:.*}", self.handler(endpoint))
                runners.append((web.AppRunner(app, access_log=None, handle_signals=False), endpoint.port))
            ops = web.Application()
            ops.router.add_get("/readyz", self.ready)
            ops.router.add_get("/healthz", self.live)
            runners.append((web.AppRunner(ops, access_log=None, handle_signals=False), self.config.ops_port))
            for runner, port in runners:
                await runner.setup()
                await web.TCPSite(runner, "0.0.0.0", port).start()
            log.info("guarding %s/%s: %s", self.config.namespace, self.config.run,
                     ", ".join(f"{e.name} {e.port}->{e.tool_port}" for e in self.config.endpoints))
            await self.follow()
        finally:
            for runner, _ in runners:
                await runner.cleanup()
            await self.session.close()


async def _pump(source, sink) -> None:
    async for msg in source:
        if msg.type == WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type == WSMsgType.PING:
            await sink.ping(msg.data)
        elif msg.type == WSMsgType.PONG:
            await sink.pong(msg.data)
        else:
            break
    await sink.close()


async def _close_both(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse, code: int,
                      message: bytes) -> None:
    for ws in (client, upstream):
        if not ws.closed:
            try:
                await asyncio.wait_for(ws.close(code=code, message=message), timeout=1)
            except (asyncio.TimeoutError, ConnectionError, RuntimeError):
                pass


def _scheme(endpoint: GuardEndpoint) -> str:
    return "https" if endpoint.tls else "http"


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers={"Cache-Control": "no-store"})


def main(env=os.environ) -> int:
    from toolshare.logs import configure

    configure(env.get("TOOLSHARE_LOG_FORMAT", "text"))
    try:
        config = GuardConfig.from_env(env)
    except ValueError as e:
        print(f"toolshare guard: {e}", file=sys.stderr)
        return 2
    try:
        eventloop.run(Guard(config).serve())
    except KeyboardInterrupt:
        pass
    return 0
