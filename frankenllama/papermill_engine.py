"""A papermill engine for headless runs that does not stall on a cell that has already finished.

papermill's client (nbclient 0.11) waits for each cell's reply on the kernel's shell channel with a
single poll as long as the cell's timeout (forever without one), and for its outputs on the IOPub
channel with a poll that has no timeout at all. Now and then, on this project's 2-core machines, a
run stalled on an explorer cell: the kernel idle, the cell done, the client still waiting (nbclient
issue 312 and papermill issue 711 report the same; the fix proposed for 312 re-polls in short slices). The
likely cause: zmq signals arrivals through an edge-triggered descriptor, and a wake-up lost while
other messages stream in (an explorer's widget messages) is not repeated. ``make figures`` has no
cell timeout, so such a stall lasts forever.

This engine (``papermill --engine frankenllama``, registered as a papermill entry point;
``make figures`` and the notebook tests use it) gives the client shell and IOPub channels whose
waits are polls of at most ``POLL_SLICE_S`` seconds, repeated until the caller's timeout: a poll that
missed its wake-up ends, and the next one reads the message that is already there. A cell timeout
still raises at the same time, and nothing else about the run changes.
"""

from __future__ import annotations

import functools
import time
from queue import Empty
from typing import Any

from nbclient.util import ensure_async, run_sync

POLL_SLICE_S = 5.0  # the longest single wait on a channel


class SlicedChannel:
    """A kernel client's channel whose ``get_msg(timeout)`` polls in slices of at most ``slice_s`` seconds.

    ``timeout=None`` waits forever, as the wrapped channel's does, and a finite timeout raises
    ``queue.Empty`` once it has passed; every other attribute is the wrapped channel's.
    """

    def __init__(self, channel: Any, slice_s: float = POLL_SLICE_S):
        if slice_s <= 0:
            raise ValueError(f"slice_s must be positive, got {slice_s}")
        self.channel = channel
        self.slice_s = slice_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self.channel, name)

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            left = self.slice_s if end is None else max(0.0, end - time.monotonic())
            try:
                return await ensure_async(self.channel.get_msg(timeout=min(self.slice_s, left)))
            except Empty:
                if end is not None and time.monotonic() >= end:
                    raise


@functools.cache
def _engine() -> type:
    """The engine class, built on first use: importing papermill registers its entry points, this module's among
    them, so this module imports nothing of papermill itself until a run asks for the engine."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine
    from papermill.log import logger
    from papermill.utils import merge_kwargs, remove_args

    class SlicedPollClient(PapermillNotebookClient):
        """papermill's notebook client, its kernel client's shell and IOPub channels wrapped in ``SlicedChannel``."""

        async def async_start_new_kernel_client(self):  # type: ignore[override]
            kc = await super().async_start_new_kernel_client()
            kc._shell_channel = SlicedChannel(kc.shell_channel)  # the cell's reply
            kc._iopub_channel = SlicedChannel(kc.iopub_channel)  # its outputs (polled without a timeout)
            return kc

        start_new_kernel_client = run_sync(async_start_new_kernel_client)

    class Engine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None, stderr_file=None,
                                     start_timeout=60, execution_timeout=None, **kwargs):
            """``NBClientEngine.execute_managed_notebook`` (papermill 2.7) with ``SlicedPollClient`` as the client."""
            kwargs = remove_args(["input_path"], **kwargs)
            final = merge_kwargs(remove_args(["timeout", "startup_timeout"], **kwargs),
                                 timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
                                 startup_timeout=start_timeout, kernel_name=kernel_name, log=logger,
                                 log_output=log_output, stdout_file=stdout_file, stderr_file=stderr_file)
            return SlicedPollClient(nb_man, **final).execute()

    return Engine


class SlicedPollEngine:
    """papermill's default engine (nbclient) with a client whose channels are ``SlicedChannel`` s (the entry point)."""

    @classmethod
    def execute_notebook(cls, *args: Any, **kwargs: Any) -> Any:
        return _engine().execute_notebook(*args, **kwargs)

    @classmethod
    def nb_kernel_name(cls, *args: Any, **kwargs: Any) -> str:
        return _engine().nb_kernel_name(*args, **kwargs)

    @classmethod
    def nb_language(cls, *args: Any, **kwargs: Any) -> str:
        return _engine().nb_language(*args, **kwargs)
