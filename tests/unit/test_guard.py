"""The guard (guard/app.py) and the gate's side of it (gate/guards.py), on loopback sockets: a real
guard process loop, the gate's real Guards hub and a small aiohttp tool. Only the gate's decision is
given here as a table (verdict.verdict on real objects is tested in test_gate.py and, end to end,
by tests/integration/test_revocation.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time

import aiohttp
import pytest
from aiohttp import WSCloseCode, web

from toolshare import grant
from toolshare.gate.guards import Guards
from toolshare.guard.app import Guard
from toolshare.guard.config import GuardConfig
from toolshare.local.controlplane.cluster import free_port

KEY = grant.new_key()
NS, RUN = "lab", "nb"


class World:
    """A tool, a gate hub whose decision is `allowed`, and a guard in front of the tool."""

    def __init__(self, grace: float = 5.0):
        self.allowed: set[tuple[str, str]] = {("alice", "lab"), ("bob", "lab")}
        self.seen_headers: list[dict] = []
        self.grace = grace
        self.runners: list[web.AppRunner] = []
        self.tasks: list[asyncio.Task] = []

    async def _site(self, app: web.Application, port: int) -> None:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self.runners.append(runner)

    async def start(self) -> "World":
        self.tool_port, self.guard_port, self.ops_port, self.gate_port = (free_port() for _ in range(4))

        async def hello(request):
            self.seen_headers.append(dict(request.headers))
            return web.Response(text=f"hello {request.headers.get('X-Auth-Request-User', 'nobody')}")

        async def echo(request):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                await ws.send_str(f"echo {msg.data}")
            return ws

        async def download(request):
            response = web.StreamResponse()
            await response.prepare(request)
            for _ in range(600):
                await response.write(b"x" * 1024)
                await asyncio.sleep(0.05)
            return response

        tool = web.Application()
        tool.router.add_get("/ws", echo)
        tool.router.add_get("/download", download)
        tool.router.add_route("*", "/{tail:.*}", hello)
        await self._site(tool, self.tool_port)
        await self.start_gate()
        config = GuardConfig.from_env({
            "TOOLSHARE_GUARD_RUN": f"{NS}/{RUN}",
            "TOOLSHARE_GUARD_ENDPOINTS": f"lab={self.guard_port}:{self.tool_port}",
            "TOOLSHARE_GUARD_OPS_PORT": str(self.ops_port), "TOOLSHARE_GATE_URL": f"http://127.0.0.1:{self.gate_port}",
            "TOOLSHARE_GRANT_PUBLIC_KEY": grant.public_text(KEY), "TOOLSHARE_GUARD_GRACE": str(self.grace)})
        self.guard = Guard(config)
        self.tasks.append(asyncio.create_task(self.guard.serve()))
        await until(lambda: self.guard.following, "the guard follows the gate")
        return self

    async def start_gate(self) -> None:
        self.hub = Guards(KEY.public_key(), lambda ns, run, ep, user, groups, now: (user, ep) in self.allowed,
                          lambda ns, run: [], lambda: True)
        gate = web.Application()
        gate.router.add_get("/guard/{namespace}/{run}", self.hub.follow)
        self.gate_runner = web.AppRunner(gate)
        await self.gate_runner.setup()
        await web.TCPSite(self.gate_runner, "127.0.0.1", self.gate_port).start()

    async def stop_gate(self) -> None:
        await self.gate_runner.shutdown()
        await self.gate_runner.cleanup()

    def revoke(self, user: str) -> None:
        self.allowed.discard((user, "lab"))
        self.hub.changed(NS)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for runner in self.runners:
            await runner.cleanup()
        await self.gate_runner.cleanup()

    def headers(self, user: str, endpoint: str = "lab", key=KEY, run: str = RUN, at: float | None = None) -> dict:
        return {grant.HEADER: grant.make(key, NS, run, endpoint, user, ("physics",), time.time() if at is None else at),
                "X-Auth-Request-User": user}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.guard_port}"


async def until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def run(coro_fn, **kw):
    async def go():
        world = await World(**kw).start()
        try:
            await coro_fn(world)
        finally:
            await world.stop()
    asyncio.run(go())


def test_only_requests_with_the_gates_grant_for_this_endpoint_get_through_and_the_tool_never_sees_it():
    async def check(w: World):
        async with aiohttp.ClientSession() as s:
            async def status(headers):
                async with s.get(f"{w.url}/lab/tree", headers=headers) as r:
                    return r.status, await r.text()

            assert await status({"X-Auth-Request-User": "alice"}) == (
                403, "refused by the run's guard: no grant: the request did not come through the gate\n")
            assert (await status(w.headers("alice", key=grant.new_key())))[0] == 403
            assert (await status(w.headers("alice", endpoint="api")))[0] == 403
            assert (await status(w.headers("alice", run="other")))[0] == 403
            assert (await status(w.headers("alice", at=time.time() - grant.TTL - 1)))[0] == 403
            assert await status(w.headers("alice")) == (200, "hello alice")
            assert not any(k.lower() == grant.HEADER.lower() for k in w.seen_headers[-1])
            # Who is calling is the grant's word, whatever else the request says.
            assert await status({**w.headers("alice"), "X-Auth-Request-User": "mallory"}) == (200, "hello alice")
            assert w.seen_headers[-1]["X-Auth-Request-Groups"] == "physics"
            async with s.get(f"http://127.0.0.1:{w.ops_port}/readyz") as r:
                assert r.status == 200
    run(check)


def test_a_revocation_closes_that_persons_websockets_and_downloads_at_once_and_no_one_elses():
    async def check(w: World):
        async with aiohttp.ClientSession() as s:
            alice = await s.ws_connect(f"{w.url}/ws", headers=w.headers("alice"))
            bob = await s.ws_connect(f"{w.url}/ws", headers=w.headers("bob"))
            for ws, who in ((alice, "alice"), (bob, "bob")):
                await ws.send_str(who)
                assert (await ws.receive(timeout=5)).data == f"echo {who}"
            download = await s.get(f"{w.url}/download", headers=w.headers("bob"))
            assert len(await download.content.read(1024)) == 1024
            before = w.headers("bob")
            await until(lambda: len(next(iter(w.hub.followers[NS])).held) == 2, "the gate holds alice and bob")
            w.revoke("bob")  # (how fast: benchmarks/revoke_close.py)
            closed = await bob.receive(timeout=5)
            assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == WSCloseCode.POLICY_VIOLATION
            with pytest.raises(aiohttp.ClientPayloadError):
                while await download.content.read(65536):
                    pass
            await alice.send_str("still here")
            assert (await alice.receive(timeout=5)).data == "echo still here"
            # A grant the gate made before it said no opens nothing; one made after it does.
            async with s.get(f"{w.url}/", headers=before) as r:
                assert r.status == 403 and "revoked" in await r.text()
            w.allowed.add(("bob", "lab"))
            at = w.guard.revoked[("lab", "bob", ("physics",))]
            await until(lambda: grant.ms(time.time()) > at, "a millisecond after the revocation")
            async with s.get(f"{w.url}/", headers=w.headers("bob")) as r:
                assert r.status == 200
            await alice.close()
    run(check)


def test_without_the_gate_the_guard_refuses_new_requests_and_closes_what_is_open_after_the_grace():
    async def check(w: World):
        async with aiohttp.ClientSession() as s:
            alice = await s.ws_connect(f"{w.url}/ws", headers=w.headers("alice"))
            lost = time.monotonic()  # the grace period starts once the guard notices, after this
            await w.stop_gate()
            await until(lambda: not w.guard.following, "the guard notices the gate is gone")
            async with s.get(f"{w.url}/", headers=w.headers("alice")) as r:
                assert r.status == 503
            async with s.get(f"http://127.0.0.1:{w.ops_port}/readyz") as r:
                assert r.status == 503
            closed = await alice.receive(timeout=10)
            assert closed.type == aiohttp.WSMsgType.CLOSE and time.monotonic() - lost >= w.grace - 0.01
            await w.start_gate()
            await until(lambda: w.guard.following, "the guard follows the gate again")
            async with s.get(f"{w.url}/", headers=w.headers("alice")) as r:
                assert r.status == 200
    run(check, grace=1.0)


def test_the_gate_tells_a_guard_only_about_grants_it_signed_for_that_run():
    hub = Guards(KEY.public_key(), lambda *a: False, lambda ns, run: [], lambda: True)

    class Follower:
        namespace, run, held = NS, RUN, set()

    follower = Follower()
    sent = []
    hub._send = lambda f, message: sent.append(message) or asyncio.sleep(0)
    now = time.time()

    async def go():
        hub._hold(follower, json.dumps({"hold": [
            grant.make(grant.new_key(), NS, RUN, "lab", "mallory", (), now),  # not the gate's
            grant.make(KEY, NS, "other", "lab", "carol", (), now),  # another run's
            grant.make(KEY, NS, RUN, "lab", "bob", ("g",), now - 3600),  # old, but the gate's: answered
            "garbage"]}))
        hub._hold(follower, "not json")
    asyncio.run(go())
    assert [m["revoked"] for m in sent] == [[["lab", "bob", ["g"]]]]


def test_a_share_that_expires_is_decided_again_at_its_expiry():
    expiry = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=0.3)
    share = {"metadata": {"name": "s", "annotations": {"toolshare.dev/shared-by": "alice"}},
             "spec": {"runRef": {"name": RUN}, "users": ["bob"], "expiresAt": expiry.isoformat()}}

    async def go():
        decisions = []

        def decide(ns, run, ep, user, groups, now):
            decisions.append(now)
            return now < expiry

        hub = Guards(KEY.public_key(), decide, lambda ns, run: [share], lambda: True)

        class Follower:
            namespace, run, held = NS, RUN, set()

        follower = Follower()
        sent = []

        async def send(f, message):
            sent.append(message)
        hub._send = send
        hub.followers[NS] = {follower}
        hub._hold(follower, json.dumps({"hold": [grant.make(KEY, NS, RUN, "lab", "bob", (), time.time())]}))
        assert sent == []
        await until(lambda: sent, "the expiry decided", timeout=5)
        assert decisions[-1] >= expiry and sent[0]["revoked"] == [["lab", "bob", []]]
    asyncio.run(go())


def test_the_guard_holds_more_connections_than_a_client_pool_would():
    """Each open websocket holds a connection to the tool; aiohttp's default pool (100) made the
    101st wait forever (found by benchmarks/revoke_close.py). All are closed on the revocation."""
    async def check(w: World):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            bobs = [await asyncio.wait_for(s.ws_connect(f"{w.url}/ws", headers=w.headers("bob")), 10)
                    for _ in range(120)]
            await bobs[-1].send_str("last")
            assert (await bobs[-1].receive(timeout=5)).data == "echo last"
            w.revoke("bob")
            for ws in bobs:
                assert (await ws.receive(timeout=10)).data == WSCloseCode.POLICY_VIOLATION
    run(check)
