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
``make figures`` and the notebook tests use it) is papermill's own nbclient engine given a kernel
manager whose clients' shell and IOPub channels wait in polls of at most ``POLL_SLICE_S`` seconds,
repeated until the caller's timeout: a poll that missed its wake-up ends, and the next one reads the
message that is already there. A cell timeout still raises at the same time, and nothing else about
the run changes. The classes plug in through jupyter_client's and nbclient's own settings
(``shell_channel_class``, ``client_class``, ``kernel_manager_class``).
"""

from __future__ import annotations

import time
from queue import Empty
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from traitlets import DottedObjectName, Type

POLL_SLICE_S = 5.0  # the longest single wait on a channel


class SlicedZMQSocketChannel(AsyncZMQSocketChannel):
    """An async kernel channel whose ``get_msg(timeout)`` polls in slices of at most ``slice_s`` seconds.

    ``timeout=None`` waits forever, as jupyter_client's channel does, and a finite timeout raises
    ``queue.Empty`` once it has passed.
    """

    slice_s: float = POLL_SLICE_S

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:  # type: ignore[override]
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            left = self.slice_s if end is None else max(0.0, end - time.monotonic())
            try:
                return await super().get_msg(timeout=min(self.slice_s, left))
            except Empty:
                if end is not None and time.monotonic() >= end:
                    raise


class SlicedKernelClient(AsyncKernelClient):
    """jupyter_client's async kernel client, its waits on shell (a cell's reply) and IOPub (its outputs) sliced."""

    shell_channel_class = Type(SlicedZMQSocketChannel)  # type: ignore[assignment]
    iopub_channel_class = Type(SlicedZMQSocketChannel)  # type: ignore[assignment]


class SlicedKernelManager(AsyncKernelManager):
    """jupyter_client's async kernel manager, handing out ``SlicedKernelClient`` s."""

    # both: AsyncKernelManager gives client_factory a default of its own, which a new client_class alone does not
    # replace (KernelManager derives the factory from client_class, but its subclass's trait default comes first)
    client_class = DottedObjectName(f"{__name__}.SlicedKernelClient")
    client_factory = Type(SlicedKernelClient)


class SlicedPollEngine:
    """papermill's nbclient engine, run with ``SlicedKernelManager`` (the entry point ``frankenllama``).

    papermill imports its engines' entry points while it is being imported, this module's among them,
    so the engine looks papermill's up when a run starts instead of importing it here.
    """

    @staticmethod
    def _nbclient() -> Any:
        from papermill.engines import NBClientEngine

        return NBClientEngine

    @classmethod
    def execute_notebook(cls, nb: Any, kernel_name: str | None, **kwargs: Any) -> Any:
        kwargs.setdefault("kernel_manager_class", SlicedKernelManager)
        return cls._nbclient().execute_notebook(nb, kernel_name, **kwargs)

    @classmethod
    def nb_kernel_name(cls, *args: Any, **kwargs: Any) -> str:
        return cls._nbclient().nb_kernel_name(*args, **kwargs)

    @classmethod
    def nb_language(cls, *args: Any, **kwargs: Any) -> str:
        return cls._nbclient().nb_language(*args, **kwargs)
