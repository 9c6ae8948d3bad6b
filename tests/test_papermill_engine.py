"""The papermill engine's sliced shell-channel waits: a missed wake-up is recovered, timeouts keep their meaning."""

from __future__ import annotations

import asyncio
import time
from queue import Empty

import pytest

from frankenllama.papermill_engine import SlicedChannel


class MissesItsFirstWakeUp:
    """A channel whose reply is already there but whose first poll never sees it (zmq's lost edge-triggered
    wake-up): that poll waits out its whole timeout, forever without one; every later poll returns the reply."""

    def __init__(self, reply: dict | None = None):
        self.reply, self.polls = reply, []

    async def get_msg(self, timeout: float | None = None) -> dict:
        self.polls.append(timeout)
        if len(self.polls) == 1 or self.reply is None:
            if timeout is None:
                await asyncio.Event().wait()  # never set: the hang papermill's client fell into
            await asyncio.sleep(timeout)
            raise Empty
        return self.reply

    def is_alive(self) -> bool:
        return True


def test_a_reply_that_the_first_poll_missed_is_read_by_the_next_slice():
    channel = MissesItsFirstWakeUp({"parent_header": {"msg_id": "a"}})
    started = time.monotonic()
    got = asyncio.run(asyncio.wait_for(SlicedChannel(channel, slice_s=0.05).get_msg(timeout=None), 5.0))
    assert got == channel.reply and channel.polls == [0.05, 0.05]
    assert time.monotonic() - started < 1.0
    with pytest.raises(asyncio.TimeoutError):  # the plain channel, same situation: it would wait forever
        asyncio.run(asyncio.wait_for(MissesItsFirstWakeUp(channel.reply).get_msg(timeout=None), 0.3))


def test_a_finite_timeout_still_raises_after_it_has_passed_and_other_attributes_pass_through():
    channel = MissesItsFirstWakeUp(None)
    sliced = SlicedChannel(channel, slice_s=0.05)
    started = time.monotonic()
    with pytest.raises(Empty):
        asyncio.run(sliced.get_msg(timeout=0.2))
    assert 0.19 <= time.monotonic() - started < 1.0
    assert all(t <= 0.05 + 1e-9 for t in channel.polls) and len(channel.polls) >= 4
    assert sliced.is_alive()
    with pytest.raises(ValueError, match="slice_s"):
        SlicedChannel(channel, slice_s=0)
