"""The operator's work queue: event handlers only queue keys, a few workers reconcile them."""

from __future__ import annotations

import asyncio

from toolshare.controller.workqueue import WorkQueue


def test_keys_are_deduplicated_bounded_and_redone_when_changed_while_running():
    async def scenario():
        q = WorkQueue(workers=3)
        running, peak, done = set(), [0], []
        gate = asyncio.Event()

        def work(key):
            async def run():
                running.add(key)
                peak[0] = max(peak[0], len(running))
                await gate.wait()
                running.discard(key)
                done.append(key)
            return run

        for i in range(10):
            q.add(("run", "ns", f"r{i}"), work(f"r{i}"))
        q.add(("run", "ns", "r9"), work("r9"))  # queued already: once
        await asyncio.sleep(0.01)
        assert len(running) == 3 and q.running == 3  # at most `workers` at once
        q.add(("run", "ns", "r0"), work("r0-again"))  # changed while running: done again after
        gate.set()
        while q.running:
            await asyncio.sleep(0.01)
        assert peak[0] == 3
        assert sorted(done) == sorted([f"r{i}" for i in range(10)] + ["r0-again"])
        assert done.index("r0-again") > done.index("r0")
        assert not q.pending and not q.active and not q.again

    asyncio.run(scenario())


def test_a_failing_reconcile_does_not_stop_the_others():
    async def scenario():
        q = WorkQueue(workers=1)
        done = []

        async def boom():
            raise RuntimeError("boom")

        async def ok():
            done.append("ok")

        q.add(("a",), boom)
        q.add(("b",), ok)
        while q.running:
            await asyncio.sleep(0.01)
        assert done == ["ok"]

    asyncio.run(scenario())


def test_a_burst_of_reconciles_that_never_wait_still_lets_the_loop_serve_others():
    """A restart queues every run at once and most have nothing to write: the admission webhooks
    must still get the loop during the burst, not only after it."""

    async def scenario():
        q = WorkQueue(workers=2)
        q.hold_at_most = -1  # hand the loop over before every reconcile (in production: every 50 ms)
        done = []

        def work(i):
            async def run():  # a reconcile's CPU, never awaiting
                done.append(i)
            return run

        async def webhook():
            await asyncio.sleep(0)
            return len(done)

        served = asyncio.ensure_future(webhook())
        for i in range(1000):
            q.add(("run", "ns", f"r{i}"), work(i))
        seen = await served
        while q.running:
            await asyncio.sleep(0.01)
        assert seen < 1000 and len(done) == 1000

    asyncio.run(scenario())
