"""The gate's side of the guards (guard/app.py): who may still be where they are.

Each run's guard keeps a websocket here, `/guard/<namespace>/<run>`, and sends {"hold": [grant,
...]}: one grant per person it holds connections for. A grant is accepted only if this gate's key
signed it for that very run (its age does not matter: it proves the gate once let that person in),
so a guard learns nothing but the fate of people it already had, and anyone else who connects
learns nothing at all. Whenever the gate's view of a namespace changes (a share deleted or edited,
a run deleted or given to another owner, an image share gone) and when a share of a followed run
expires, the gate decides again for every person held, with the very code /check uses
(verdict.verdict), and sends {"revoked": [[endpoint, user, [groups]], ...], "at": <ms>} for those who
may no longer be there; the guard closes their connections.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable

from aiohttp import WSMsgType, web

from toolshare import access, grant
from toolshare.gate import metrics

log = logging.getLogger("toolshare.gate.guards")
Identity = tuple[str, str, tuple[str, ...]]
# (namespace, run, endpoint, user, groups, now) -> may that person be there now?
Decide = Callable[[str, str, str, str, tuple[str, ...], dt.datetime], bool]
# (namespace, run) -> the run's shares, for when the next one expires
Shares = Callable[[str, str], list]


class Follower:
    """One guard's websocket and the people it holds."""

    def __init__(self, namespace: str, run: str, ws: web.WebSocketResponse):
        self.namespace, self.run, self.ws = namespace, run, ws
        self.held: set[Identity] = set()


class Guards:
    def __init__(self, public, decide: Decide, shares: Shares, ready: Callable[[], bool],
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)):
        self.public, self.decide, self.shares, self.ready, self.clock = public, decide, shares, ready, clock
        self.followers: dict[str, set[Follower]] = {}  # by namespace
        self._dirty: set[str] = set()
        self._expiry: dict[tuple[str, str], asyncio.TimerHandle] = {}

    # --- deciding ---------------------------------------------------------------------------

    def changed(self, namespace: str | None) -> None:
        """The gate's view of `namespace` (None: of everything) changed: decide again, soon (once per
        turn of the event loop however many events arrive together)."""
        if not self.followers:
            return
        first = not self._dirty
        self._dirty.update(self.followers if namespace is None else [namespace])
        if first:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for namespace in dirty:
            for follower in list(self.followers.get(namespace, ())):
                self.review(follower)

    def review(self, follower: Follower) -> None:
        """Decide for everyone `follower` holds; tell it who must go; watch for the next expiry."""
        now = self.clock()
        gone = sorted(i for i in follower.held
                      if not self.decide(follower.namespace, follower.run, i[0], i[1], i[2], now))
        if gone:
            follower.held.difference_update(gone)
            metrics.GUARD_REVOCATIONS.inc(len(gone))
            message = {"revoked": [[e, u, list(g)] for e, u, g in gone], "at": grant.ms(now.timestamp())}
            asyncio.ensure_future(self._send(follower, message))
        self._watch_expiry(follower.namespace, follower.run, now)

    def _watch_expiry(self, namespace: str, run: str, now: dt.datetime) -> None:
        key = (namespace, run)
        if handle := self._expiry.pop(key, None):
            handle.cancel()
        when = access.next_expiry(self.shares(namespace, run), now)
        if when is None:
            return
        delay = max(0.0, (when - now).total_seconds())
        self._expiry[key] = asyncio.get_running_loop().call_later(delay, self._expired, namespace, run)

    def _expired(self, namespace: str, run: str) -> None:
        self._expiry.pop((namespace, run), None)
        for follower in list(self.followers.get(namespace, ())):
            if follower.run == run:
                self.review(follower)

    @staticmethod
    async def _send(follower: Follower, message: dict) -> None:
        try:
            await follower.ws.send_str(json.dumps(message))
        except (ConnectionError, RuntimeError):
            pass  # the guard is gone; it fails closed on its side

    # --- the websocket ----------------------------------------------------------------------

    async def follow(self, request: web.Request) -> web.StreamResponse:
        namespace, run = request.match_info["namespace"], request.match_info["run"]
        if not self.ready():
            return web.Response(status=503, text="the gate is not in sync with the cluster\n")
        ws = web.WebSocketResponse(heartbeat=5.0, max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        follower = Follower(namespace, run, ws)
        self.followers.setdefault(namespace, set()).add(follower)
        metrics.GUARDS.inc()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                self._hold(follower, msg.data)
        finally:
            metrics.GUARDS.dec()
            followers = self.followers.get(namespace, set())
            followers.discard(follower)
            if not followers:
                self.followers.pop(namespace, None)
                for key in [k for k in self._expiry if k[0] == namespace]:
                    self._expiry.pop(key).cancel()
        return ws

    def _hold(self, follower: Follower, text: str) -> None:
        try:
            tokens = json.loads(text).get("hold") or []
        except (ValueError, AttributeError):
            return
        for token in tokens if isinstance(tokens, list) else []:
            try:
                found = grant.read(self.public, token)
            except grant.GrantRefused:
                continue
            if (found.namespace, found.run) == (follower.namespace, follower.run):
                follower.held.add(found.identity)
        self.review(follower)  # someone may have lost access between their /check and now
