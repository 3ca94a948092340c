"""The operator's cache: views like kopf indexes, newest version wins, drops unlink everything."""

from toolshare.cache import Cache, Source


def obj(uid, name, rv, ns="a", labels=None, spec=None):
    return {"apiVersion": "v1", "kind": "X", "metadata": {"uid": uid, "name": name, "namespace": ns,
            "resourceVersion": str(rv), "labels": labels or {}, "managedFields": [{"m": 1}]}, "spec": spec or {}}


def make():
    c = Cache()

    @c.index("xs", Source("/x"))
    def by_ns(namespace, body, **_):
        return {namespace: c.stripped(body)}

    @c.index("xs", Source("/x"))
    def by_ref(namespace, spec, body, **_):
        return {(namespace, spec["ref"]): c.stripped(body)} if spec.get("ref") else None

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


def test_one_stripped_copy_is_shared_by_every_view():
    c = make()
    c.put("xs", obj("1", "one", 5, spec={"ref": "r"}))
    assert c.view("by_ns").get("a")[0] is c.view("by_ref").get(("a", "r"))[0]
