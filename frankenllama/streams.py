"""Where cached residual streams live: on the compute device, in (pinned) CPU memory, or on disk.

The similarity pass, the ablation scan and the cached searches keep residual streams ``(B, T, H)``
keyed by (state, batch) — the stream entering each block of each calibration batch. On one
accelerator with a small model they stay where they were computed (``"device"``, the default: no
copy, nothing changes). When they do not fit, ``"cpu"`` keeps them in host memory (page-locked when
CUDA exists, so the copy back overlaps compute) and ``"disk"`` in raw files of a temporary folder
read back through ``numpy.memmap``; each is fetched to the device it came from when read, so the
accelerator holds one stream (plus the block running on it) at a time, not all of them.

``unit_chunks`` walks token slices of all states of one batch, normalised, sized so that a chunk of
the ``L + 1`` states holds about as much as one stream: the pairwise statistics of the similarity
pass (``frankenllama.similarity``) then never stack every state at once on the accelerator.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

StreamPlace = Literal["device", "cpu", "disk"]
STREAM_PLACES: tuple[str, ...] = ("device", "cpu", "disk")


def check_place(place: str) -> None:
    if place not in STREAM_PLACES:
        raise ValueError(f"stream_store must be one of {STREAM_PLACES} (where cached residual streams live), got {place!r}")


class StreamStore:
    """Tensors keyed by hashable keys, held per ``place`` and returned on the device they were put from.

    ``store[state][b]`` reads and writes the stream entering block ``state`` of batch ``b`` (the
    indexing ``Trunk.states`` always had); ``put``/``get``/``drop`` take any key. ``folder``: where
    ``"disk"`` makes its temporary folder (default: the system's temporary directory).
    """

    def __init__(self, place: str = "device", folder: str | Path | None = None):
        check_place(place)
        self.place = place
        self._data: dict[Hashable, torch.Tensor] = {}  # "device" and "cpu": the tensors
        self._meta: dict[Hashable, tuple[tuple[int, ...], torch.dtype, torch.device]] = {}  # "cpu" and "disk"
        self._tmp = tempfile.TemporaryDirectory(prefix="frankenllama-streams-", dir=folder) if place == "disk" else None
        self._pin = place == "cpu" and torch.cuda.is_available()
        self._written = 0

    def _path(self, key: Hashable) -> Path:
        return Path(self._tmp.name) / f"{self._data[key]}.bin"

    def put(self, key: Hashable, x: torch.Tensor) -> None:
        x = x.detach()
        self.drop(key)
        if self.place == "device":
            self._data[key] = x
            return
        self._meta[key] = (tuple(x.shape), x.dtype, x.device)
        if self.place == "cpu":
            self._data[key] = torch.empty(x.shape, dtype=x.dtype, pin_memory=self._pin)
            self._data[key].copy_(x)
            return
        self._written += 1
        self._data[key] = self._written  # the file's number
        raw = x.cpu().contiguous().view(torch.uint8).numpy()  # any dtype (bfloat16 too) as its bytes
        mm = np.memmap(self._path(key), dtype=np.uint8, mode="w+", shape=raw.shape)
        mm[...] = raw
        mm.flush()
        del mm

    def get(self, key: Hashable, tokens: slice | None = None) -> torch.Tensor:
        """The tensor put under ``key`` (``tokens``: only those positions of dim 1), on the device it came from."""
        if self.place == "device":
            x = self._data[key]
            return x if tokens is None else x[:, tokens]
        shape, dtype, device = self._meta[key]
        if self.place == "cpu":
            x = self._data[key] if tokens is None else self._data[key][:, tokens]
            return x.to(device, non_blocking=self._pin)
        item = torch.empty((), dtype=dtype).element_size()
        mm = np.memmap(self._path(key), dtype=np.uint8, mode="r", shape=(*shape[:-1], shape[-1] * item))
        raw = np.array(mm if tokens is None else mm[:, tokens])  # a writable copy
        del mm
        return torch.from_numpy(raw).view(dtype).to(device)

    def drop(self, key: Hashable) -> None:
        """Forget ``key`` (and delete its file); nothing happens for an unknown key."""
        if key in self._data and self.place == "disk":
            self._path(key).unlink(missing_ok=True)
        self._data.pop(key, None)
        self._meta.pop(key, None)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def __getitem__(self, state: int) -> _Row:
        return _Row(self, state)

    def close(self) -> None:
        """Free everything (and delete the disk folder)."""
        self._data.clear()
        self._meta.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class _Row:
    """``store[state]``: the streams entering block ``state``, indexed by batch."""

    def __init__(self, store: StreamStore, state: int):
        self.store, self.state = store, state

    def __getitem__(self, b: int) -> torch.Tensor:
        return self.store.get((self.state, b))

    def __setitem__(self, b: int, x: torch.Tensor) -> None:
        self.store.put((self.state, b), x)


def unit_chunks(
    state: Callable[[int, slice], torch.Tensor], n_states: int, length: int, device: torch.device, whole: bool
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Token slices of all ``n_states`` states of one batch, L2-normalised in float32: ``(slice, (S, B, t, H))``.

    ``state(i, tokens)`` returns positions ``tokens`` of state i. ``whole``: one chunk of every
    position (the states fit together); otherwise chunks of about ``length / n_states`` positions, so
    a chunk of every state holds about as much as one stream.
    """
    step = length if whole else max(1, length // n_states)
    for start in range(0, length, step):
        tokens = slice(start, min(length, start + step))
        stacked = torch.stack([state(i, tokens).to(device) for i in range(n_states)])
        yield tokens, F.normalize(stacked.float(), dim=-1)
