"""After a kind is listed again, objects the cache holds but the list lacks were deleted unseen."""

from toolshare.state.cache import Cache, Source
from toolshare.state.relist import vanished


def obj(uid, name, rv, run="r"):
    return {"apiVersion": "v1", "kind": "X", "metadata": {"uid": uid, "name": name, "namespace": "a",
            "resourceVersion": str(rv), "labels": {"run": run}}, "spec": {}}


def make():
    c = Cache()

    @c.index("xs", Source("/x"))
    def by_run(namespace, labels, body, **_):
        return {(namespace, labels["run"]): c.stripped(body)}

    return c


def test_what_a_newer_list_lacks_is_gone_and_what_is_newer_than_the_list_stays():
    c = make()
    for o in (obj("1", "kept", 5), obj("2", "deleted", 6), obj("3", "created-after", 12, run="s"),
              obj("4", "also-deleted", 7, run="s")):
        c.put("xs", o)
    gone = vanished(c.view("by_run"), listed={"1"}, version=10)
    assert sorted(o["metadata"]["name"] for o in gone) == ["also-deleted", "deleted"]
    assert all(o["metadata"]["labels"] for o in gone)  # as the views hold them, for the handler
    # Nothing is dropped by looking.
    assert len(c.view("by_run").get(("a", "r"))) == 2


def test_nothing_is_gone_when_the_list_has_everything():
    c = make()
    c.put("xs", obj("1", "one", 5))
    assert vanished(c.view("by_run"), listed={"1"}, version=4) == []
