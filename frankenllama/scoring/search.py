"""Searches over removal configurations on the calibration loss, from cached residual streams.

* ``greedy_removal`` — iterative greedy removal: remove the unit whose removal raises the
  calibration NLL least, re-score, repeat. SLEB (Song et al. 2024, arXiv:2402.09025) over blocks,
  BlockPruner (Zhong et al. 2024, arXiv:2406.10594) over attention and MLP sub-blocks. Nested in k.
* ``swap_search`` — steepest-descent swaps of removed blocks for neighbouring kept ones, from the
  best of several starting sets (this workbook).
* ``part_swap_search`` — the same over sub-blocks, swapping an attention for an attention (or an MLP
  for an MLP), so the pruned model keeps its size (this workbook; He et al. 2024, arXiv:2406.15786,
  on the redundancy of attention).

Every candidate configuration is evaluated from the cached streams of ``frankenllama.scoring.trunk``
and abandoned as soon as its NLL is sure to exceed the best so far (an exact bound: the same choice
as the exhaustive evaluation). Which starts a search gets is the selection strategies' business
(``frankenllama.selection``); these functions only search from what they are given.
"""

from __future__ import annotations

import bisect
import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from frankenllama.loss import next_token_nll
from frankenllama.models import decoder_layers
from frankenllama.scoring.trunk import BOUND_VOCAB, Trunk
from frankenllama.units import ATTN, MLP, Granularity, layer_of, num_units, part_of, removal_mask


@dataclass(frozen=True)
class GreedyResult:
    """The removal order of an iterative greedy search and the mean calibration NLL after each step.

    Greedy searches are nested: the first k entries of ``order`` are the search's choice at k.
    """

    granularity: str
    order: list[int]
    nll: list[float]  # mean NLL after step 1 … len(order)
    base_nll: float
    evaluated: list[int] = field(default_factory=list)  # candidates evaluated at each step
    abandoned: list[int] = field(default_factory=list)  # of those, how many the bound cut short

    def chosen(self, k: int) -> list[int]:
        if k > len(self.order):
            raise ValueError(f"the search ran {len(self.order)} steps; ask for k <= {len(self.order)} or run it longer")
        return sorted(self.order[:k])


@contextlib.contextmanager
def without_layers(model: nn.Module, layers: Sequence[int]) -> Iterator[nn.Module]:
    """Temporarily remove blocks ``layers`` from ``model`` (no copy); the naive search's model."""
    inner = model.model
    original = inner.layers
    keep = [i for i in range(len(original)) if i not in set(layers)]
    inner.layers = nn.ModuleList(original[i] for i in keep)
    try:
        yield model
    finally:
        inner.layers = original


@torch.no_grad()
def greedy_removal(
    model: nn.Module,
    input_ids: torch.Tensor,
    steps: int,
    granularity: Granularity = "layer",
    batch_size: int = 4,
    cached: bool = True,
    shortlist: int | None = None,
    start: Sequence[int] = (),
    first: np.ndarray | None = None,
    bounded: bool = True,
    bound_vocab: int = BOUND_VOCAB,
    progress: bool = False,
    stream_store: str = "device",
    stream_dir: str | None = None,
) -> GreedyResult:
    """Iteratively remove the unit whose removal raises the calibration NLL least, re-scoring after each step.

    SLEB (Song et al. 2024, arXiv:2402.09025) at ``granularity="layer"``; BlockPruner (Zhong et al.
    2024, arXiv:2406.10594) at ``"sublayer"``, whose candidates are attention and MLP sub-blocks.

    Args:
        steps: how many units to remove in all (including ``start``).
        cached: evaluate each candidate from the cached stream entering its block (see module doc).
            ``False`` is the naive search: every candidate is a full forward pass of the model with
            the candidate removed (blocks are dropped from the model without copying; sub-blocks are
            bypassed by the same trunk code from the embeddings). Both choose the same units.
        bounded: (cached search only) evaluate the candidates most promising first and abandon one as
            soon as its total NLL is sure to exceed the best complete total of this step
            (``Trunk.total_nll``): a lower bound from a few thousand LM-head rows, batch by batch,
            and the full 49k-row head only for a candidate that might still win. The bounds never
            exceed the NLL, so the choice is exactly the same; catastrophic candidates (typically
            the first and last blocks, which are also the dearest to evaluate from the cache) stop
            after a batch or two, and most others never pay the full LM head.
        bound_vocab: tokens the lower bound scores besides the targets (``Trunk``; 0: only the
            exact partial sums are compared with the bound).
        shortlist: after the first step, evaluate only the ``shortlist`` candidates that scored best at
            the previous step (an approximation; ``None`` is the exact search). With ``bounded``, a
            step whose candidates outnumber the shortlist completes its best ``shortlist + 1``
            exactly, and candidates the bound abandoned rank after every completed one, so the
            shortlists (and choices) are those of the unbounded search.
        start: units already removed (a previous, shorter run of the same search) to continue from.
        first: the mean calibration NLL with each unit removed alone, (U,), when already known from
            ``ablation_scan`` on the same blocks: the first step reads it instead of re-measuring.
        stream_store, stream_dir: where the cached streams live (``frankenllama.streams``; same choices).
    """
    L = len(decoder_layers(model))
    U = num_units(L, granularity)
    if not 1 <= steps <= U - 1:
        raise ValueError(f"steps = {steps} is outside 1 … {U - 1} for {U} {granularity} units")
    if shortlist is not None and shortlist < 1:
        raise ValueError(f"shortlist must be positive or None, got {shortlist}")
    trunk = Trunk(model, input_ids, batch_size, bound_vocab=bound_vocab, stream_store=stream_store, stream_dir=stream_dir)
    count = float(trunk.n_predictions().sum())
    bounded = bounded and cached
    removed: list[int] = list(start)
    mask = removal_mask(removed, L, granularity)
    if cached:
        trunk.refresh(mask, progress=progress)
    if removed:
        base = math.nan  # known to the run that chose ``start``
    elif cached:
        base = float(sum(trunk.nll(trunk.states[L][b], b).sum() for b in range(len(trunk.batches)))) / count
    else:
        base = float(_naive_nll(trunk, model, [], granularity).sum()) / count
    losses: list[float] = []
    evaluated: list[int] = []
    abandoned: list[int] = []
    previous: dict[int, float] = {}
    for _ in tqdm(range(len(removed), steps), desc=f"greedy ({granularity})", disable=not progress, leave=False):
        candidates = [u for u in range(U) if u not in removed]
        if shortlist is not None and previous:
            # abandoned candidates (known to be worse than every complete one) before unevaluated ones
            candidates = sorted(candidates, key=lambda u: (u not in previous, previous.get(u, math.inf)))[:shortlist]
        scores: dict[int, float] = {}
        if first is not None and not removed:
            scores = {u: float(first[u]) for u in candidates}
            candidates = []
        if bounded:  # most promising first: the previous step's scores, else Block Influence of the current model
            hint = previous or dict(enumerate(trunk.block_influence() if granularity == "layer" else np.zeros(U)))
            candidates = sorted(candidates, key=lambda u: (hint.get(u, math.inf), u))
        # The bound is the keep-th best complete total: the next step's shortlist needs the exact
        # ranks of the best shortlist + 1 candidates, unless every candidate makes it anyway.
        keep = 1 if shortlist is None or len(candidates) <= shortlist + 1 else shortlist + 1
        complete: list[float] = []  # totals of the candidates evaluated in full, ascending
        cut = 0
        for u in candidates:
            if cached:
                bound = complete[keep - 1] if len(complete) >= keep else math.inf
                total = trunk.candidate_nll(u, granularity, bound=bound if bounded else math.inf)
            else:
                total = _naive_nll(trunk, model, removed + [u], granularity)
            if total is None:  # abandoned: its loss exceeds the best complete one(s)
                cut += 1
                continue
            value = float(total.sum())
            scores[u] = value / count
            bisect.insort(complete, value)
        best = min(scores, key=lambda u: (scores[u], u))
        removed.append(best)
        losses.append(scores[best])
        evaluated.append(len(candidates))  # 0 where the first step was read from the ablation scan
        abandoned.append(cut)
        previous = scores | {u: math.inf for u in candidates if u not in scores}
        mask = removal_mask(removed, L, granularity)
        if cached:
            trunk.refresh(mask, from_layer=layer_of(best, granularity))
    return GreedyResult(granularity, removed, losses, base, evaluated, abandoned)


@dataclass(frozen=True)
class SwapResult:
    """A local search's final removal set, its mean calibration NLL, and the swaps it made."""

    removed: list[int]
    nll: float
    start_nll: float
    swaps: list[tuple[int, int]]  # (put back, removed instead), in order
    start: list[int] = field(default_factory=list)  # the starting set the search improved (the best of those given)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"removed": np.array(self.removed), "nll": np.array(self.nll), "start_nll": np.array(self.start_nll),
                "swaps": np.array(self.swaps, dtype=np.int64).reshape(-1, 2), "start": np.array(self.start)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> SwapResult:
        return cls([int(u) for u in arrays["removed"]], float(arrays["nll"]), float(arrays["start_nll"]),
                   [(int(a), int(b)) for a, b in arrays["swaps"]], [int(u) for u in arrays["start"]])


@torch.no_grad()
def swap_search(
    model: nn.Module,
    input_ids: torch.Tensor,
    start: Sequence[int],
    batch_size: int = 4,
    max_rounds: int = 8,
    progress: bool = False,
    alternatives: Sequence[Sequence[int]] = (),
    stream_store: str = "device",
    stream_dir: str | None = None,
) -> SwapResult:
    """Improve a set of removed blocks by swaps: put one back, remove a neighbour of the set instead.

    ``alternatives``: other starting sets of the same size (e.g. other strategies' choices); the
    search starts from whichever of ``start`` and these has the lowest calibration NLL (multi-start).

    A greedy search cannot undo an early choice; this steepest-descent local search can. Each round
    evaluates every swap of a removed block r for a kept block adjacent to the removed set (the
    calibration NLL of each configuration computed from the unpruned model's cached streams, from
    the first removed block on) and applies the best one if it lowers the calibration NLL; it stops
    when no swap helps or after ``max_rounds``. Started from SLEB's choice this is "SLEB + swaps", a
    refinement in the spirit of the local search of Kim et al. 2024 ("Shortened LLaMA") and
    SLEB's own observation that greedy block choices interact (Song et al. 2024, arXiv:2402.09025).
    ``stream_store``/``stream_dir`` as in ``greedy_removal``.
    """
    L = len(decoder_layers(model))
    removed = sorted(int(u) for u in start)
    if not 1 <= len(removed) <= L - 1:
        raise ValueError(f"start must name 1 … {L - 1} blocks, got {removed}")
    trunk = Trunk(model, input_ids, batch_size, stream_store=stream_store, stream_dir=stream_dir)
    trunk.refresh(removal_mask((), L, "layer"))
    loss = _calibration_loss(trunk, "layer")
    current = loss(removed)
    for other in alternatives:
        other = sorted(int(u) for u in other)
        if len(other) != len(removed):
            raise ValueError(f"every starting set must name {len(removed)} blocks, got {other}")
        if other != removed:
            value = loss(other, current)
            if value < current:
                removed, current = other, value

    def neighbours(removed: list[int]) -> Iterator[tuple[int, int]]:
        kept = sorted({n for r in removed for n in (r - 1, r + 1) if 0 <= n < L and n not in removed})
        return ((r, c) for r in removed for c in kept)

    final, value, swaps = _descend(loss, removed, current, neighbours, max_rounds, progress)
    return SwapResult(final, value, current, swaps, removed)


@torch.no_grad()
def part_swap_search(
    model: nn.Module,
    input_ids: torch.Tensor,
    start: Sequence[int],
    cost: np.ndarray,
    width: int = 4,
    parts: Sequence[int] = (ATTN,),
    batch_size: int = 4,
    max_rounds: int = 8,
    progress: bool = False,
    stream_store: str = "device",
    stream_dir: str | None = None,
) -> SwapResult:
    """Improve a set of removed sub-blocks by same-kind swaps: put back the attention (or MLP) of one block, remove another's.

    ``start`` and the result are sub-block ids (``2ℓ`` attention, ``2ℓ+1`` MLP of block ℓ), typically
    the sub-blocks of the best whole-block choice. A swap never changes how many attention and MLP
    sub-blocks are removed, so the pruned model keeps the same parameter count and compute. The
    sub-blocks tried in place of a removed one are the ``width`` kept ones of the same kind with the
    lowest ``cost`` (2L,), e.g. the one-sub-block-out ΔNLL; ``parts`` are the kinds swapped (``ATTN``
    by default: attention sub-blocks are far more redundant than MLPs, He et al. 2024, "What Matters
    in Transformers? Not All Attention is Needed", arXiv:2406.15786, and a whole-block choice removes
    an attention that matters along with a cheap MLP). Steepest descent on the calibration NLL as in
    ``swap_search``, from the unpruned model's cached streams, with the same exact bound.
    """
    L = len(decoder_layers(model))
    U = num_units(L, "sublayer")
    removed = sorted({int(u) for u in start})
    if not removed or not all(0 <= u < U for u in removed):
        raise ValueError(f"start must name sub-blocks in 0 … {U - 1}, got {removed}")
    if np.shape(cost) != (U,):
        raise ValueError(f"cost must give one number per sub-block, shape ({U},), got {np.shape(cost)}")
    if width < 1 or not parts or not set(parts) <= {ATTN, MLP}:
        raise ValueError(f"need width >= 1 and parts among ATTN = {ATTN}, MLP = {MLP}; got width {width}, parts {parts}")
    trunk = Trunk(model, input_ids, batch_size, stream_store=stream_store, stream_dir=stream_dir)
    trunk.refresh(removal_mask((), L, "sublayer"))
    loss = _calibration_loss(trunk, "sublayer")

    def same_kind(removed: list[int]) -> Iterator[tuple[int, int]]:
        for part in parts:
            kept = [u for u in range(U) if part_of(u) == part and u not in removed]
            for c in sorted(kept, key=lambda u: (cost[u], u))[:width]:
                # the trials that remove c share the stream up to the block whose sub-block they put back:
                # cache it once (the trials then run from that block on, ``Trunk.mask_nll``)
                mask = removal_mask([*removed, c], L, "sublayer")
                if (start := trunk.first_difference(mask)) < L:
                    trunk.refresh(mask, from_layer=start)
                yield from ((r, c) for r in removed if part_of(r) == part)

    current = loss(removed)
    final, value, swaps = _descend(loss, removed, current, same_kind, max_rounds, progress)
    return SwapResult(final, value, current, swaps, removed)


def _calibration_loss(trunk: Trunk, granularity: Granularity) -> Callable[..., float]:
    """``loss(units, bound=inf)``: mean calibration NLL with ``units`` removed (``inf`` once sure to exceed ``bound``)."""
    count = float(trunk.n_predictions().sum())

    def loss(units: Sequence[int], bound: float = math.inf) -> float:
        total = trunk.mask_nll(removal_mask(units, trunk.num_layers, granularity), bound=bound * count)
        return math.inf if total is None else float(total.sum()) / count

    return loss


def _descend(
    loss: Callable[..., float],
    removed: list[int],
    current: float,
    moves: Callable[[list[int]], Iterable[tuple[int, int]]],
    max_rounds: int,
    progress: bool,
) -> tuple[list[int], float, list[tuple[int, int]]]:
    """Steepest descent over swaps ``(put back, remove instead)``: each round tries every move and applies the best if it helps."""
    swaps: list[tuple[int, int]] = []
    for _ in tqdm(range(max_rounds), desc="swap search", disable=not progress, leave=False):
        trials: dict[tuple[int, int], float] = {}
        best = current
        for r, c in moves(removed):  # a trial that cannot beat the best so far is abandoned early (exact)
            trials[(r, c)] = loss(sorted(set(removed) - {r} | {c}), best)
            best = min(best, trials[(r, c)])
        if not trials:
            break
        (r, c), value = min(trials.items(), key=lambda item: (item[1], item[0]))
        if value >= current:
            break
        removed, current = sorted(set(removed) - {r} | {c}), value
        swaps.append((r, c))
    return removed, current, swaps


@torch.no_grad()
def _naive_nll(trunk: Trunk, model: nn.Module, units: list[int], granularity: Granularity) -> torch.Tensor:
    """Per-sample NLL sums of the model with ``units`` removed, by a full forward pass from the embeddings."""
    if granularity == "layer":
        out = []
        with without_layers(model, units) as pruned:
            for batch in trunk.batches:
                nll = next_token_nll(pruned(input_ids=batch.ids, use_cache=False).logits, batch.ids)  # (B, T-1)
                out.append(nll.double().sum(1).cpu())
        return torch.cat(out)
    mask = removal_mask(units, trunk.num_layers, granularity)
    return torch.cat([trunk.nll(trunk.run(trunk.embed(b), b, 0, mask), b) for b in range(len(trunk.batches))])

