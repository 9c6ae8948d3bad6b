"""The papermill engine's sliced channel waits: a missed wake-up is recovered, timeouts keep their meaning, and the
engine hands papermill a kernel manager whose clients use the sliced channels."""

from __future__ import annotations

import asyncio
import time
from queue import Empty

import pytest
import zmq
import zmq.asyncio
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.session import Session

from frankenllama.papermill_engine import SlicedKernelManager, SlicedPollEngine, SlicedZMQSocketChannel


class MissesItsFirstWakeUp(zmq.asyncio.Socket):
    """A real zmq socket whose first poll never sees a message that is already there (zmq's lost edge-triggered
    wake-up): that poll waits out its whole timeout, forever without one; every later poll is zmq's own."""

    polls: list

    def poll(self, timeout=None, flags=zmq.POLLIN):  # type: ignore[override]
        self.polls.append(timeout)
        if len(self.polls) > 1:
            return super().poll(timeout, flags)

        async def missed() -> int:
            if timeout is None:
                await asyncio.Event().wait()  # never set: the hang papermill's client fell into
            await asyncio.sleep(timeout / 1000)
            return 0

        return missed()


async def _receive(channel_class: type, timeout: float | None, send: bool, slice_s: float = 0.05) -> tuple:
    """One ``get_msg(timeout)`` on a channel of ``channel_class`` over a loopback socket pair (a reply sent first if
    ``send``); returns the message (or the exception raised) and the receiving socket's polls."""
    sync, context = zmq.Context(), zmq.asyncio.Context()
    receiver = MissesItsFirstWakeUp(context, zmq.PAIR)
    receiver.polls = []
    sender = sync.socket(zmq.PAIR)
    try:
        sender.connect(f"tcp://127.0.0.1:{receiver.bind_to_random_port('tcp://127.0.0.1')}")
        session = Session(key=b"")
        if send:
            session.send(sender, "execute_reply", {"status": "ok"})
            await asyncio.sleep(0.2)  # the message has arrived before the first poll
        channel = channel_class(receiver, session)
        channel.slice_s = slice_s
        try:
            got = await channel.get_msg(timeout=timeout)
        except Empty as e:
            got = e
        return got, receiver.polls
    finally:
        sender.close(0), receiver.close(0), sync.term(), context.term()


def test_a_reply_that_the_first_poll_missed_is_read_by_the_next_slice():
    started = time.monotonic()
    got, polls = asyncio.run(asyncio.wait_for(_receive(SlicedZMQSocketChannel, None, send=True), 5.0))
    assert got["msg_type"] == "execute_reply" and got["content"] == {"status": "ok"}
    assert polls == [50, 50] and time.monotonic() - started < 2.0
    with pytest.raises(asyncio.TimeoutError):  # jupyter_client's own channel, same socket: it waits forever
        asyncio.run(asyncio.wait_for(_receive(AsyncZMQSocketChannel, None, send=True), 1.0))


def test_a_finite_timeout_still_raises_once_it_has_passed():
    started = time.monotonic()
    got, polls = asyncio.run(_receive(SlicedZMQSocketChannel, 0.3, send=False))
    assert isinstance(got, Empty)
    assert 0.29 <= time.monotonic() - started < 2.0
    assert len(polls) >= 5 and all(p <= 50 for p in polls)


def test_the_engine_runs_papermill_with_clients_on_sliced_channels(tmp_path, monkeypatch):
    import nbformat
    import papermill
    from papermill.engines import papermill_engines  # imports the entry points, this project's among them

    assert papermill_engines.get_engine("frankenllama") is SlicedPollEngine
    client = SlicedKernelManager().client()
    assert client.shell_channel_class is SlicedZMQSocketChannel and client.iopub_channel_class is SlicedZMQSocketChannel
    waits = []
    sliced = SlicedZMQSocketChannel.get_msg

    async def counted(self, timeout=None):
        waits.append(timeout)
        return await sliced(self, timeout)

    monkeypatch.setattr(SlicedZMQSocketChannel, "get_msg", counted)
    source, out = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")]), source)
    papermill.execute_notebook(source, out, engine_name="frankenllama", kernel_name="python3", progress_bar=False)
    assert nbformat.read(out, 4).cells[0].outputs[0].text == "42\n"
    assert waits  # the run's replies and outputs came through the sliced channels
