"""The event loop every Toolshare process runs on: uvloop.

At 100 share changes/s the operator's main thread spends about a quarter of its time in asyncio's
own socket, TLS and scheduling code (BENCHMARKS.md, issue 17); uvloop does that work in libuv and C.
One place, so the operator, the gate, the guard and the tests that exercise their TLS all run on
the same loop.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop."""
    return uvloop.run(main)
