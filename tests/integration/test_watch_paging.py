"""The reflector's paged LIST through the real API server (client/watch.py): every page into one
store, in order, finished once, and the watch resumed from the LIST's version misses nothing."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.support.objects import Toolshare, toolrun
from tests.support.stores import Recording
from toolshare import model
from toolshare.client.config import ApiConfig
from toolshare.client.watch import Reflector


def test_a_list_pages_through_the_api_server_and_the_watch_follows_from_its_version(cluster, crds, namespace):
    as_admin = Toolshare(cluster.client(), namespace)
    for i in range(5):
        as_admin.create(toolrun(f"r{i}"))
    api = ApiConfig.load(str(cluster.kubeconfig()))
    added: list[str] = []
    seen = asyncio.Event()

    def on_event(kind: str, obj: dict) -> None:
        if kind == "ADDED":
            added.append(obj["metadata"]["name"])
            seen.set()

    async def scenario():
        Recording.made.clear()
        reflector = Reflector(api, f"/apis/{model.API_VERSION}/namespaces/{namespace}/toolruns",
                              store=Recording, on_event=on_event, page=2)
        async with aiohttp.ClientSession() as session:
            task = asyncio.create_task(reflector.run(session))
            await asyncio.wait_for(reflector.synced.wait(), 30)
            await asyncio.to_thread(as_admin.create, toolrun("r5"))
            await asyncio.wait_for(seen.wait(), 30)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return reflector

    reflector = asyncio.run(scenario())
    [store] = Recording.made
    assert [len(p) for p in store.pages] == [2, 2, 1] and store.finished == 1
    assert sorted(n for p in store.pages for n in p) == [f"r{i}" for i in range(5)]
    assert added == ["r5"] and reflector.lists == 1
