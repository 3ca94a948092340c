"""The reflector's paged LIST (client/watch.py), against a local server speaking the API server's
paging protocol (limit, continue, one resourceVersion for every page), so that a failure half-way
can be made to happen; tests/integration/test_watch_paging.py pages through the real API server."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from tests.support.stores import Recording
from toolshare.client.config import ApiConfig
from toolshare.client.watch import Gone, Reflector

ITEMS = [{"metadata": {"name": f"r{i}", "uid": f"u{i}", "resourceVersion": str(90 + i)}} for i in range(5)]


async def _listing(fail_on_page: dict[int, int], page: int = 2):
    """Serve ITEMS `page` at a time at resourceVersion 100; the n-th page request answers
    fail_on_page[n] instead, once. Returns (reflector, the queries seen, run a LIST)."""
    queries: list[dict] = []

    async def serve(request: web.Request) -> web.Response:
        queries.append(dict(request.query))
        n = len(queries)
        if n in fail_on_page:
            code = fail_on_page.pop(n)
            return web.json_response({"kind": "Status", "code": code}, status=code)
        start = int(request.query.get("continue") or 0)
        limit = int(request.query["limit"])
        rest = start + limit < len(ITEMS)
        return web.json_response({"metadata": {"resourceVersion": "100", **({"continue": str(start + limit)} if rest else {})},
                                  "items": ITEMS[start:start + limit]})

    app = web.Application()
    app.router.add_get("/apis/toolshare.dev/v1alpha1/toolruns", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    api = ApiConfig(f"http://127.0.0.1:{port}", False, None, _headers={}, _headers_until=float("inf"))
    reflector = Reflector(api, "/apis/toolshare.dev/v1alpha1/toolruns", store=Recording,
                          on_event=lambda *_: None, page=page)
    return reflector, queries, runner


def test_a_list_comes_page_by_page_into_one_store_then_is_finished_once():
    async def scenario():
        Recording.made.clear()
        reflector, queries, runner = await _listing({})
        async with aiohttp.ClientSession() as session:
            await reflector._list(session)
        await runner.cleanup()
        return reflector, queries

    reflector, queries = asyncio.run(scenario())
    [store] = Recording.made
    assert store.pages == [["r0", "r1"], ["r2", "r3"], ["r4"]] and store.finished == 1
    assert [q.get("continue") for q in queries] == [None, "2", "4"] and {q["limit"] for q in queries} == {"2"}
    assert reflector.resource_version == "100" and reflector.synced.is_set() and reflector.lists == 1


@pytest.mark.parametrize("status, raised", [(500, aiohttp.ClientResponseError), (410, Gone)])
def test_a_list_that_fails_half_way_is_never_finished_nor_synced(status, raised):
    async def scenario():
        Recording.made.clear()
        reflector, queries, runner = await _listing({2: status})
        async with aiohttp.ClientSession() as session:
            with pytest.raises(raised):
                await reflector._list(session)
            failed = (reflector.synced.is_set(), reflector.resource_version, reflector.lists)
            await reflector._list(session)  # listed afresh into a new store, from the first page
        await runner.cleanup()
        return failed, queries

    failed, queries = asyncio.run(scenario())
    half, whole = Recording.made
    assert failed == (False, "", 0)
    assert half.pages == [["r0", "r1"]] and half.finished == 0
    assert whole.pages == [["r0", "r1"], ["r2", "r3"], ["r4"]] and whole.finished == 1
    assert [q.get("continue") for q in queries] == [None, "2", None, "2", "4"]
