"""The operator's cache: views like kopf indexes, newest version wins, drops unlink everything."""

import pytest

from toolshare.state.cache import Cache, Source


def obj(uid, name, rv, ns="a", labels=None, spec=None):
    return {"apiVersion": "v1", "kind": "X", "metadata": {"uid": uid, "name": name, "namespace": ns,
            "resourceVersion": str(rv), "labels": labels or {}, "managedFields": [{"m": 1}]}, "spec": spec or {}}


def make():
    c = Cache()

    @c.index("xs", Source("/x"))
    def by_ns(namespace, body, **_):
        return {namespace: c.packed(body)}

    @c.index("xs", Source("/x"))
    def by_ref(namespace, spec, body, **_):
        return {(namespace, spec["ref"]): c.packed(body)} if spec.get("ref") else None

    return c


def test_views_follow_puts_moves_and_drops():
    c = make()
    c.put("xs", obj("1", "one", 5, spec={"ref": "r"}))
    c.put("xs", obj("2", "two", 6))
    assert sorted(o["metadata"]["name"] for o in c.view("by_ns").get("a")) == ["one", "two"]
    assert [o["metadata"]["name"] for o in c.view("by_ref").get(("a", "r"))] == ["one"]
    assert "managedFields" not in c.view("by_ns").get("a")[0]["metadata"]
    # A new version moves the object between keys; the old key empties.
    c.put("xs", obj("1", "one", 7, ns="a", spec={"ref": "s"}))
    assert c.view("by_ref").get(("a", "r")) == [] and len(c.view("by_ref").get(("a", "s"))) == 1
    c.drop("xs", obj("1", "one", 8))
    assert [o["metadata"]["name"] for o in c.view("by_ns").get("a")] == ["two"]
    assert c.view("by_ref").get(("a", "s")) == []


def test_an_older_version_never_replaces_a_newer_one():
    c = make()
    assert c.put("xs", obj("1", "one", 9, spec={"ref": "new"}))
    assert not c.put("xs", obj("1", "one", 3, spec={"ref": "old"}))
    assert c.view("by_ref").get(("a", "old")) == [] and len(c.view("by_ref").get(("a", "new"))) == 1


def test_the_same_version_again_is_not_indexed_again():
    c = make()
    calls = []
    c._fns["xs"].append(("counted", lambda **kw: calls.append(kw["name"]) or None))
    c.view("counted")
    assert c.put("xs", obj("1", "one", 4)) and calls == ["one"]
    assert c.put("xs", obj("1", "one", 4)) and calls == ["one"]  # kopf's listing after prefill's
    assert c.put("xs", obj("1", "one", 5)) and calls == ["one", "one"]


def test_one_packed_copy_per_version_is_shared_by_every_view_and_reads_are_fresh():
    c = make()
    c.put("xs", obj("1", "one", 5, spec={"ref": "r"}))
    packed = c.view("by_ns").data["a"]["1"]
    assert isinstance(packed, bytes) and c.view("by_ref").data[("a", "r")]["1"] is packed
    a, b = c.view("by_ns").get("a")[0], c.view("by_ref").get(("a", "r"))[0]
    assert a == b and a is not b  # each read decodes its own dicts: no reader can change the cache
    a["spec"]["ref"] = "changed"
    assert c.view("by_ns").get("a")[0]["spec"] == {"ref": "r"}
    c.put("xs", obj("1", "one", 6, spec={"ref": "r", "x": 1}))
    assert c.view("by_ns").get("a")[0]["spec"] == {"ref": "r", "x": 1} and c.version("1") == 6


def test_the_start_up_list_is_read_page_by_page():
    from toolshare.state.cache import list_pages

    class Kube:
        def __init__(self):
            self.queries = []

        def request(self, method, path, query):
            self.queries.append(dict(query))
            page = int(dict(query).get("continue") or 0)
            items = [obj(str(i), f"o{i}", i) for i in range(page * 2, page * 2 + 2)]
            return {"items": items, "metadata": {"continue": str(page + 1) if page < 2 else ""}}

    kube, c = Kube(), make()
    pages = list_pages(kube, Source("/x", "a=b"), "v1", "X", page=2)
    first = next(pages)
    assert len(kube.queries) == 1 and [o["metadata"]["name"] for o in first] == ["o0", "o1"]
    assert c.fill("xs", first) + sum(c.fill("xs", items) for items in pages) == 6
    assert kube.queries[0] == {"limit": "2", "labelSelector": "a=b"} and kube.queries[2]["continue"] == "2"
    assert len(c.view("by_ns").get("a")) == 6


def test_a_paged_relist_says_what_changed_came_or_went():
    # A watch that could not resume lists again (controller/children.py): whatever changed, came
    # or went meanwhile, under its old and its new keys, and nothing else, is looked at again.
    c = make()
    for o in (obj("1", "same", 5, spec={"ref": "r"}), obj("2", "moved", 6, spec={"ref": "r"}),
              obj("3", "gone", 7, ns="b")):
        c.put("xs", o)
    replacing = c.replacing("xs")
    replacing.page([obj("1", "same", 5, spec={"ref": "r"}), obj("2", "moved", 9, spec={"ref": "s"})])
    replacing.page([obj("4", "new", 10, ns="c")])
    touched = replacing.finish()
    assert touched == {("by_ns", "a"), ("by_ref", ("a", "r")), ("by_ref", ("a", "s")), ("by_ns", "b"),
                       ("by_ns", "c")}
    assert sorted(o["metadata"]["name"] for v in c.view("by_ns").values() for o in v) == ["moved", "new", "same"]
    assert c.view("by_ns").get("b") == []


def test_interleaved_lists_keep_each_kinds_page_order_and_a_failed_fetch_is_raised_in_its_place():
    import threading

    from toolshare.state.cache import interleaved

    streams = {kind: iter([[f"{kind}{i}"] for i in range(20)]) for kind in "abcde"}
    got = list(interleaved(streams, width=3, depth=2))
    for kind in "abcde":
        assert [items for k, items in got if k == kind] == [[f"{kind}{i}"] for i in range(20)]
    assert len(got) == 100

    before = threading.active_count()
    started = threading.Event()

    def failing():
        yield ["x0"]
        raise ConnectionError("API server away")

    def endless():
        started.set()
        while True:
            yield ["y"]

    got = []
    with pytest.raises(ConnectionError, match="away"):
        for kind, items in interleaved({"x": failing(), "y": endless()}, width=2, depth=1):
            got.append((kind, items))
    assert ("x", ["x0"]) in got and started.is_set()
    # The thread still fetching the other kind stops at its next page instead of blocking forever.
    for thread in threading.enumerate():
        if thread.name == "list-pages":
            thread.join(timeout=5)
    assert threading.active_count() == before


def test_the_start_up_burst_pauses_the_collector_then_freezes_what_lives_and_restores_it():
    import gc
    import weakref

    from toolshare.state.cache import collector_paused

    class Node:
        pass

    gc.unfreeze()
    try:
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            with pytest.raises(RuntimeError), collector_paused():
                assert not gc.isenabled()
                kept = Node()
                garbage = Node()
                garbage.self = garbage  # a cycle left by start-up: collected, not frozen
                collected = weakref.ref(garbage)
                del garbage
                frozen = gc.get_freeze_count()
                raise RuntimeError("a failed LIST")
            assert gc.isenabled() is enabled  # restored, even after a failure
            assert collected() is None
            assert gc.get_freeze_count() > frozen  # `kept` among them: later collections skip it
            assert not any(o is kept for o in gc.get_objects())
    finally:
        gc.enable()
        gc.unfreeze()


def test_a_paged_listing_holds_exactly_what_was_listed_and_leaves_out_what_the_views_cannot_take():
    c = make()
    c.put("xs", obj("gone", "gone", 1))
    c.put("xs", obj("kept", "kept", 2))
    listing = c.replacing("xs")
    listing.page([obj("kept", "kept", 2), obj("new", "new", 3)])
    listing.page([obj("bad", "bad", 4, spec={"ref": {"not": "a name"}})])  # by_ref cannot key on it
    # Until the last page is in, nothing listed before is dropped.
    assert sorted(o["metadata"]["name"] for o in c.view("by_ns").get("a")) == ["gone", "kept", "new"]
    listing.finish()
    assert sorted(o["metadata"]["name"] for o in c.view("by_ns").get("a")) == ["kept", "new"]
    assert c.version("bad") == 0 and c.version("gone") == 0
