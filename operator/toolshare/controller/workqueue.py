"""The controller's scheduling: a work queue of reconciles by key, and timers with backoff."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from toolshare.state.cache import release_memory

log = logging.getLogger("toolshare.workqueue")
Work = Callable[[], Awaitable[None]]


class WorkQueue:
    """Reconciles to do, by key, run by at most `workers` tasks at once.

    An event handler records the key and returns: kopf then drops the event's body at once, and a
    mass start (10,000 runs and shares at once, or a restart) holds 20,000 keys instead of 20,000
    half-done reconciles, each with its event body, its rendered children and a place in the
    write queue (over 1 GB at 10,000 runs, measured). A key already queued is not queued twice;
    a key changed while its reconcile runs is done again after it (it reads the cache afresh).
    """

    def __init__(self, workers: int = 32) -> None:
        self.workers = workers
        # FIFO with O(1) pops from the front (a plain dict's next(iter()) rescans deleted slots).
        self.pending: OrderedDict[tuple, Work] = OrderedDict()
        self.active: set[tuple] = set()
        self.again: dict[tuple, Work] = {}
        self.running = 0
        self.tasks: set[asyncio.Task] = set()
        self.trim: asyncio.TimerHandle | None = None
        self.trim_after = 3.0
        # A reconcile with nothing to write never waits, so a burst of them (a restart's 20,000
        # at 10,000 runs, seconds of work) would hold the event loop throughout: the admission
        # webhooks, which start after the burst is queued, could not answer. Workers hand the loop
        # over at least this often.
        self.hold_at_most = 0.05

    def add(self, key: tuple, work: Work) -> None:
        if self.trim is not None:
            self.trim.cancel()
            self.trim = None
        if key in self.active:
            self.again[key] = work
            return
        self.pending[key] = work
        if self.running < self.workers:
            self.running += 1
            task = asyncio.ensure_future(self._work())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        held_since = loop.time()
        try:
            while self.pending:
                if loop.time() - held_since > self.hold_at_most:
                    await asyncio.sleep(0)
                    held_since = loop.time()
                    if not self.pending:  # emptied by the others meanwhile
                        break
                key, work = self.pending.popitem(last=False)
                self.active.add(key)
                try:
                    await work()
                except Exception:  # noqa: BLE001 - one key must not stop the others
                    log.exception("reconciling %s", key)
                finally:
                    self.active.discard(key)
                    if key in self.again:
                        self.pending[key] = self.again.pop(key)
        finally:
            self.running -= 1
            if not self.running and not self.pending:
                # Once the queue has stayed empty a while, a burst (a start, a mass change) is
                # over: hand the memory it freed back to the system.
                self.trim = asyncio.get_running_loop().call_later(self.trim_after, release_memory)


class Timers:
    """Work to do later, one timer per key: expiries, and retries with a doubling backoff."""

    def __init__(self) -> None:
        self.timers: dict[tuple, asyncio.TimerHandle] = {}
        self.backoff: dict[tuple, float] = {}

    def schedule(self, key: tuple, when: float, callback: Work) -> None:
        """Run `callback` at loop time `when`, replacing a later timer for the same key."""
        loop = asyncio.get_running_loop()
        existing = self.timers.get(key)
        # A timer that has already fired stays in the table; it must not count as pending, or every
        # later retry or expiry for the same key would be dropped.
        if existing is not None and not existing.cancelled() and loop.time() < existing.when() <= when:
            return
        if existing is not None:
            existing.cancel()
        self.timers[key] = loop.call_at(when, lambda: asyncio.ensure_future(callback()))

    def cancel(self, key: tuple) -> None:
        timer = self.timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def retry(self, key: tuple, callback: Work) -> None:
        """Call `callback` again after a doubling delay (1 s up to 60 s) until it succeeds."""
        delay = min(self.backoff.get(key, 0.5) * 2, 60.0)
        self.backoff[key] = delay
        self.schedule(key, asyncio.get_running_loop().time() + delay, callback)

    def succeeded(self, key: tuple) -> None:
        self.backoff.pop(key, None)

    def after(self, key: tuple, callback: Work, failed: bool) -> None:
        """After an attempt: schedule the next (backing off) if it failed, else reset the backoff."""
        if failed:
            self.retry(key, callback)
        else:
            self.succeeded(key)
