"""The gate's start: the cyclic collector is off for the first LISTs only, and never left off."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace

import pytest

from toolshare.gate import app
from toolshare.gate.app import Gate, GateConfig


@pytest.fixture
def gate():
    assert gc.isenabled()
    yield Gate(GateConfig(auth_url="http://127.0.0.1:9/oauth2/auth"))
    gc.unfreeze()  # what the start froze belongs to this test process, not to the next test
    gc.enable()


def lists(n: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(synced=asyncio.Event()) for _ in range(n)]


def test_the_collector_is_off_until_every_kind_is_listed(gate):
    async def scenario():
        gate.reflectors = lists(3)
        first = asyncio.create_task(gate._first_sync())
        states = []
        for r in gate.reflectors:
            await asyncio.sleep(0)  # the pause has begun, or the previous kind is in
            states.append(gc.isenabled())
            r.synced.set()
        await first
        return states, gc.isenabled(), gc.get_freeze_count()

    states, after, frozen = asyncio.run(scenario())
    assert states == [False, False, False]
    assert after and frozen > 0  # on again, with what start-up left alive out of later collections


def test_a_gate_that_cannot_list_turns_the_collector_on_again(gate, monkeypatch, caplog):
    monkeypatch.setattr(app, "FIRST_SYNC_PAUSE", 0.05)

    async def scenario():
        gate.reflectors = lists(2)
        gate.reflectors[0].synced.set()
        await gate._first_sync()  # the other kind never lists
        return gc.isenabled()

    assert asyncio.run(scenario())
    assert "the garbage collector is on again" in caplog.text


def test_a_gate_stopped_while_listing_turns_the_collector_on_again(gate):
    async def scenario():
        gate.reflectors = lists(1)
        task = asyncio.create_task(gate._first_sync())
        await asyncio.sleep(0)
        paused = not gc.isenabled()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return paused, gc.isenabled()

    assert asyncio.run(scenario()) == (True, True)
