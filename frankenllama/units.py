"""Removable units of a decoder stack, and their ids: written once for every module that counts them.

A unit is a whole decoder block (``granularity="layer"``, ids ``0 … L-1``) or one of its two
residual sub-blocks (``granularity="sublayer"``, ids ``0 … 2L-1``): ``2ℓ`` is the attention of block
ℓ (``x ← x + Attn(norm₁(x))``), ``2ℓ + 1`` its MLP (``x ← x + MLP(norm₂(x))``), as BlockPruner
prunes them (Zhong et al. 2024, arXiv:2406.10594). A removal mask is an ``(L, 2)`` boolean array,
``mask[ℓ, ATTN]`` / ``mask[ℓ, MLP]`` True where that sub-block is bypassed; both unit kinds map onto it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

Granularity = Literal["layer", "sublayer"]
GRANULARITIES: tuple[str, ...] = ("layer", "sublayer")
ATTN, MLP = 0, 1  # part of a sub-block: its id is 2 * layer + part
PARTS: tuple[str, ...] = ("attn", "mlp")  # part names, indexed by ATTN / MLP


def check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; use one of {GRANULARITIES}")


def num_units(num_layers: int, granularity: Granularity) -> int:
    """How many removable units an L-block model has at this granularity (L or 2L)."""
    check_granularity(granularity)
    return num_layers if granularity == "layer" else len(PARTS) * num_layers


def sublayer_id(layer: int, part: str | int) -> int:
    """The id of sub-block ``part`` (``"attn"``/``"mlp"``, or ``ATTN``/``MLP``) of block ``layer``."""
    if isinstance(part, str):
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {part!r}")
        part = PARTS.index(part)
    elif part not in (ATTN, MLP):
        raise ValueError(f"part must be ATTN = {ATTN} or MLP = {MLP}, got {part!r}")
    return len(PARTS) * layer + part


def layer_of(unit: int, granularity: Granularity = "sublayer") -> int:
    """The block a unit belongs to (the unit itself at layer granularity)."""
    return unit if granularity == "layer" else unit // len(PARTS)


def part_of(unit: int) -> int:
    """``ATTN`` or ``MLP``: which half of its block a sub-block is."""
    return unit % len(PARTS)


def layer_units(layers: Iterable[int]) -> list[int]:
    """The sub-block ids of whole blocks ``layers``, sorted: ``[3, 5] → [6, 7, 10, 11]``."""
    return sorted(sublayer_id(layer, part) for layer in layers for part in (ATTN, MLP))


def whole_layers(ids: Iterable[int]) -> list[int]:
    """The blocks both of whose sub-blocks are among ``ids``, sorted."""
    ids = set(ids)
    return sorted({layer_of(u) for u in ids if all(sublayer_id(layer_of(u), p) in ids for p in (ATTN, MLP))})


def describe(ids: Iterable[int]) -> list[str]:
    """Readable names of sub-block ids: ``[26, 27] → ["13.attn", "13.mlp"]``."""
    return [f"{layer_of(i)}.{PARTS[part_of(i)]}" for i in sorted(ids)]


def check_ids(ids: Iterable[int], count: int, noun: str, allow_all: bool = False) -> list[int]:
    """Validate ids of ``noun``s (``"layer"``, ``"sub-block"``) among ``0 … count−1``; return them sorted.

    Refuses non-integers, out-of-range and duplicate ids, and (unless ``allow_all``) removing all
    ``count``, with a message that says how to fix the call.
    """
    ids = list(ids)
    bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, int)]
    if bad:
        raise TypeError(f"{noun} ids must be integers, got {bad!r}")
    out = [i for i in ids if not 0 <= i < count]
    if out:
        raise ValueError(f"{noun} ids {out} out of range: the model has {noun}s 0 … {count - 1}")
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"duplicate {noun} ids {dupes}: name each {noun} once")
    if not allow_all and len(ids) >= count:
        raise ValueError(f"cannot remove all {count} {noun}s: keep at least one")
    return sorted(ids)


def check_sublayer_ids(ids: Iterable[int], num_layers: int) -> list[int]:
    """Validate sub-block ids of an L-block model (0 … 2L−1, no repeats, not all); return them sorted."""
    return check_ids(ids, num_units(num_layers, "sublayer"), "sub-block")


def removal_mask(units: Sequence[int], num_layers: int, granularity: Granularity) -> np.ndarray:
    """``(L, 2)`` boolean array: ``mask[ℓ, ATTN]`` / ``mask[ℓ, MLP]`` is True where that sub-block is removed."""
    mask = np.zeros((num_layers, len(PARTS)), dtype=bool)
    for u in units:
        if granularity == "layer":
            mask[u, :] = True
        else:
            mask[layer_of(u), part_of(u)] = True
    return mask


def bypass_flags(unit: int, granularity: Granularity, mask: np.ndarray) -> tuple[bool, bool]:
    """``(keep attention, keep MLP)`` of ``unit``'s block with ``unit`` bypassed on top of removal ``mask``."""
    if granularity == "layer":
        return (False, False)
    layer = layer_of(unit)
    if part_of(unit) == ATTN:
        return (False, not mask[layer, MLP])
    return (not mask[layer, ATTN], False)
