"""controller/resources.py: what a kind's relist hands its handler, after a watch could not resume."""

import asyncio

from toolshare.controller.resources import Kind, Resources
from toolshare.state import views
from toolshare.state.cache import CACHE


def run(name: str, uid: str, rv: int) -> dict:
    return {"apiVersion": "toolshare.dev/v1alpha1", "kind": "ToolRun",
            "metadata": {"name": name, "namespace": "relist-test", "uid": uid, "resourceVersion": str(rv)},
            "spec": {"owner": "alice", "image": "img", "endpoints": []}}


class Kube:
    """Serves one LIST of toolruns in pages of two, at resourceVersion 50."""

    def __init__(self, items):
        self.items = items

    def request(self, method, path, query):
        start = int(dict(query).get("continue") or 0)
        more = start + 2 < len(self.items)
        return {"items": [dict(i) for i in self.items[start:start + 2]],
                "metadata": {"resourceVersion": "50", "continue": str(start + 2) if more else ""}}


def test_a_relist_hands_over_what_changed_and_what_vanished_and_skips_what_the_cache_holds():
    held, changed, deleted, born = run("held", "u1", 10), run("changed", "u2", 11), run("deleted", "u3", 12), \
        run("born-after", "u4", 60)
    for obj in (held, changed, deleted, born):
        CACHE.put("toolruns", obj)
    calls = []

    async def handler(event, body):
        calls.append((event, body["metadata"]["name"], body["metadata"]["resourceVersion"]))
        if event == "DELETED":
            CACHE.drop("toolruns", body)
        else:
            CACHE.put("toolruns", body)

    listed = [held, run("changed", "u2", 40), run("new", "u5", 41)]
    kind = Kind("toolruns", "ToolRun", "toolruns_by_key", handler, views.run)
    try:
        version = asyncio.run(Resources(Kube(listed), {}, [kind])._relist(kind))
        assert version == "50"
        # Listed objects the cache holds at another version (or not at all) as listed events, in
        # the list's order; the held one not at all; the one the list lacks and that is not newer
        # than it as DELETED; the one created after the list stays.
        assert calls == [(None, "changed", "40"), (None, "new", "41"), ("DELETED", "deleted", "12")]
        assert views.run("relist-test", "deleted") is None and views.run("relist-test", "born-after") is not None
    finally:
        for obj in (held, changed, deleted, born, listed[2]):
            CACHE.drop("toolruns", obj)


def test_a_handler_that_fails_is_logged_and_a_deletion_still_leaves_the_cache(caplog):
    from toolshare.controller.resources import _handle

    obj = run("poison", "u9", 5)
    CACHE.put("toolruns", obj)

    async def handler(event, body):
        raise ValueError("boom")

    kind = Kind("toolruns", "ToolRun", "toolruns_by_key", handler, views.run)
    try:
        asyncio.run(_handle(kind, "MODIFIED", obj))  # does not raise: the watch goes on
        assert views.run("relist-test", "poison") is not None
        asyncio.run(_handle(kind, "DELETED", obj))
        assert views.run("relist-test", "poison") is None  # a deletion that failed still grants nothing
        assert "Handler 'handler' failed with an exception on DELETED ToolRun relist-test/poison" in caplog.text
    finally:
        CACHE.drop("toolruns", obj)

