"""render_hash: the hash stamped on every child must not change with how it is computed, or an
upgrade would rewrite every child of every run once. It is the stdlib's canonical JSON (sorted
keys, compact, ASCII) hashed, whichever encoder produced the bytes."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given, settings, strategies as st

from toolshare.controller.reconcile import _NOT_STDLIB_BYTES, _maybe_not_stdlib, render_hash
from toolshare.state.cache import _SAMPLES

LEAVES = (st.none() | st.booleans() | st.integers(min_value=-2**63, max_value=2**63 - 1)
          | st.floats(allow_nan=False, allow_infinity=False) | st.text())
TREES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                     max_leaves=12)


def stdlib_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


@settings(max_examples=3000)
@given(TREES)
def test_the_hash_is_the_stdlib_canonical_jsons(obj):
    assert render_hash(obj) == stdlib_hash(obj)


def test_children_as_rendered_and_with_the_differences_the_fast_path_avoids():
    for child in _SAMPLES:
        assert render_hash(child) == stdlib_hash(child)
    for odd in ({"name": "café"}, {"k": "\x7f"}, {"cpu": 1e-05}, {"cpu": 0.00001}, {"n": 2.5e-07},
                {"label": "日本"}, {"a": "\U0001f600"}, {"big": 1e16}, {"z": 1, "a": {"y": [1, "x"], "b": None}},
                {1: "an integer key"}, {"huge": 2**70}):
        assert render_hash(odd) == stdlib_hash(odd)


# Bytes rich in what the predicate looks for: digits, "e", "-", ".", "0", DEL and non-ASCII.
ALMOST_JSON = st.lists(st.sampled_from([b"0", b"1", b"9", b"e", b"-", b".", b"a", b'"', b"\x7f", b"\x80", b"\xc3\xa9",
                                        b"0.0000", b"1e-", b"e-"]), max_size=24).map(b"".join)


@settings(max_examples=3000)
@given(ALMOST_JSON | st.binary(max_size=64))
def test_the_fast_check_is_the_regexs_answer(text):
    assert _maybe_not_stdlib(text) == (_NOT_STDLIB_BYTES.search(text) is not None)
