"""conditions.contains: the comparison that decides whether a child needs a write.

Its fast path checks concrete types before the Mapping ABC; these properties hold it to the plain
definition on parsed-JSON trees, on read-only mappings, and on actual objects that carry the
server's extra fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from hypothesis import given, strategies as st

from toolshare.conditions import contains

LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4)
TREES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                     max_leaves=12)


def reference(actual, desired) -> bool:
    """The definition: every field of desired present and equal; lists element by element."""
    if isinstance(desired, Mapping):
        return isinstance(actual, Mapping) and all(k in actual and reference(actual[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(actual, list) and len(actual) == len(desired) and all(
            reference(a, d) for a, d in zip(actual, desired))
    return actual == desired


def with_extra(tree, extra):
    """`tree` with server-filled keys added to every dict in it (a superset, as the API server returns)."""
    if isinstance(tree, dict):
        return {**extra, **{k: with_extra(v, extra) for k, v in tree.items()}}
    if isinstance(tree, list):
        return [with_extra(v, extra) for v in tree]
    return tree


def frozen(tree):
    if isinstance(tree, dict):
        return MappingProxyType({k: frozen(v) for k, v in tree.items()})
    if isinstance(tree, list):
        return [frozen(v) for v in tree]
    return tree


@given(TREES, TREES)
def test_contains_is_the_definition(actual, desired):
    assert contains(actual, desired) == reference(actual, desired)
    assert contains(frozen(actual), frozen(desired)) == reference(actual, desired)


@given(TREES, st.dictionaries(st.text(min_size=5, max_size=6), LEAVES, max_size=2))
def test_extra_server_fields_never_count_as_drift(desired, extra):
    assert contains(with_extra(desired, extra), desired)


def test_a_changed_or_missing_field_is_drift():
    desired = {"metadata": {"annotations": {"toolshare.dev/allowed-users": "bob"}}, "spec": {"rules": [{"host": "h"}]}}
    assert contains({**desired, "status": {}}, desired)
    assert not contains({"metadata": {"annotations": {"toolshare.dev/allowed-users": "bob,carol"}},
                         "spec": {"rules": [{"host": "h"}]}}, desired)
    assert not contains({"metadata": {"annotations": {}}, "spec": {"rules": [{"host": "h"}]}}, desired)
    assert not contains({**desired, "spec": {"rules": [{"host": "h"}, {"host": "i"}]}}, desired)
    assert not contains({**desired, "spec": {"rules": ({"host": "h"},)}}, desired)  # a tuple is not the list
    assert not contains({**desired, "spec": "rules"}, desired)
