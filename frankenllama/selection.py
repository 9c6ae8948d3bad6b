"""Which blocks to remove: one registry of selection strategies keyed by short names.

``select_layers(source, k, strategy)`` returns the sorted ids of the ``k`` units ``strategy`` removes.
``source`` is a ``LayerSimilarity`` (enough for the similarity proxies) or a
``frankenllama.scores.LayerScores`` (the similarity plus the model and calibration blocks, for the
strategies that measure the model). Units are blocks ``0 … L-1``, or for the sub-layer strategies
sub-blocks ``0 … 2L-1`` (``2ℓ`` attention, ``2ℓ+1`` MLP of block ℓ; see ``frankenllama.sublayer``).

Layer strategies:

* ``"block-influence"`` — the k blocks with the lowest Block Influence (ShortGPT, Men et al. 2024,
  arXiv:2403.03853); not necessarily contiguous.
* ``"angular"`` — the k blocks with the lowest one-block angular distance d(ℓ, 1), last token
  (Gromov et al. 2024, arXiv:2403.17887, used per block).
* ``"angular-block"`` / ``"angular-block-all"`` — the contiguous run of k blocks whose input and output
  are closest, ``argmin_ℓ d(ℓ, k)``, on the last token / all tokens (Gromov et al. 2024).
* ``"ablation-nll"`` / ``"ablation-kl"`` — the k blocks whose removal *alone* costs the least
  calibration NLL / KL to the full model (one-layer-out ablation).
* ``"taylor"`` — the k blocks of lowest Taylor importance Σ|w·∂L/∂w| (Kim et al. 2024,
  arXiv:2402.02834); ``"taylor+"`` the same never removing the first ⌊L/8⌉ and last ⌊L/16⌉ blocks
  (the first 4 and last 2 of 32 in the paper).
* ``"contiguous-nll"`` — the contiguous run of k blocks of least summed one-layer-out ΔNLL.
* ``"reverse"`` — the k blocks just before the last one, ``L-1-k … L-2`` (reverse-order pruning,
  Lu et al. 2024, "Reassessing Layer Pruning in LLMs", arXiv:2411.15558).
* ``"sleb"`` — iterative greedy: remove the block whose removal raises the calibration NLL least,
  re-score, repeat (SLEB, Song et al. 2024, arXiv:2402.09025). Nested in k.
* ``"swap-search"`` — a multi-start local search on the calibration loss: of the choices of SLEB,
  angular-block (last and all tokens), contiguous-nll, ablation-kl and block-influence, start from
  the one of lowest calibration NLL, then make steepest-descent swaps (put a removed block back,
  remove a block next to the removed set) while the calibration NLL drops. A greedy search cannot
  undo an early choice and a proxy cannot see block interactions; the swaps can
  (``frankenllama.scores.swap_search``). Never worse on calibration than any of its starts.

Sub-layer strategies (k counts sub-blocks):

* ``"sublayer-nll"`` — the k sub-blocks of least one-sub-block-out ΔNLL.
* ``"blockpruner"`` — iterative greedy over attention and MLP sub-blocks (BlockPruner, Zhong et al.
  2024, arXiv:2406.10594). Nested in k.
* ``"part-swap"`` — the sub-blocks of swap-search's k/2 blocks, then swaps of one kind for the same
  kind while the calibration NLL drops: put back the attention of a removed block, remove the
  attention of a kept block instead (``frankenllama.scores.part_swap_search``). A whole-block
  choice takes an attention that matters along with a cheap MLP; attention sub-blocks elsewhere
  are far more redundant (He et al. 2024, arXiv:2406.15786). Every swap keeps as many attention
  and MLP sub-blocks removed, so the model has exactly the size of k/2 blocks removed (k even).
  At most two swaps by default (``LayerScores.part_swap``'s ``rounds``), a CPU time budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from frankenllama.scores import SCORES, LayerScores, num_units
from frankenllama.similarity import LayerSimilarity


class UnknownStrategyError(KeyError):
    """A strategy name that is not a key of ``STRATEGIES``."""


@dataclass(frozen=True)
class Strategy:
    """A registered selection strategy.

    ``select(scores, k)`` returns k unit ids (any order); ``granularity`` is ``"layer"`` or
    ``"sublayer"``; ``needs_model`` says whether it measures the model (ablation, gradients, search);
    ``nested`` whether its choice at k always contains its choice at k−1; ``search`` whether it
    searches configurations with many forward passes per k (SLEB, swap search, BlockPruner);
    ``paired`` whether a sub-layer strategy removes as many attention as MLP sub-blocks (k even:
    the size of k/2 whole blocks).
    """

    select: Callable[[LayerScores, int], list[int]]
    granularity: str = "layer"
    needs_model: bool = False
    nested: bool = False
    cite: str = ""
    search: bool = False  # a search over configurations (many forward passes per k), not a ranking
    paired: bool = False  # (sub-layer) removes attention and MLP sub-blocks in equal numbers: k even, k/2 blocks' worth


def check_k(k: int, num_layers: int, granularity: str = "layer") -> None:
    """Refuse a k outside 1 … U−1, U the number of units (L blocks, or 2L sub-blocks)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer number of layers, got {k!r}")
    units = num_units(num_layers, granularity)  # type: ignore[arg-type]
    what = "layers" if granularity == "layer" else "sub-blocks"
    if not 1 <= k <= units - 1:
        raise ValueError(f"k = {k} is outside 1 … {units - 1}: the model has {units} {what} and keeps at least one")


def lowest(score: np.ndarray, k: int, candidates: np.ndarray | None = None) -> list[int]:
    """The k units of lowest importance (ties: lower id first), optionally among ``candidates``."""
    ids = np.arange(len(score)) if candidates is None else np.asarray(candidates)
    if k > len(ids):
        raise ValueError(f"only {len(ids)} candidate units; cannot choose {k}")
    order = ids[np.argsort(score[ids], kind="stable")]
    return [int(i) for i in order[:k]]


def best_run(cost: np.ndarray, k: int) -> list[int]:
    """The contiguous run of k blocks of least ``cost[start]`` (NaN = invalid start)."""
    start = int(np.nanargmin(cost))
    return list(range(start, start + k))


def _top_k(score: str) -> Callable[[LayerScores, int], list[int]]:
    return lambda ctx, k: lowest(ctx.score(score), k)


def _angular_block(tokens: str) -> Callable[[LayerScores, int], list[int]]:
    def select(ctx: LayerScores, k: int) -> list[int]:
        distance = ctx.similarity.angular_distance(tokens)  # type: ignore[arg-type]
        return best_run(distance[: distance.shape[0] - k + 1, k - 1], k)

    return select


def taylor_plus(ctx: LayerScores, k: int) -> list[int]:
    L = ctx.num_layers
    first, last = round(L / 8), round(L / 16)
    candidates = np.arange(first, L - last)
    if k > len(candidates):
        raise ValueError(f"taylor+ keeps the first {first} and last {last} of {L} blocks: at most {len(candidates)} can go, not {k}")
    return lowest(ctx.score("taylor"), k, candidates)


def contiguous_nll(ctx: LayerScores, k: int) -> list[int]:
    delta = ctx.score("ablation-nll")
    sums = np.convolve(delta, np.ones(k), mode="valid")  # sums[s] = Σ delta[s : s+k]
    return best_run(sums, k)


def reverse(ctx: LayerScores, k: int) -> list[int]:
    L = ctx.num_layers
    return list(range(L - 1 - k, L - 1))


def swap_starts(ctx: LayerScores, k: int) -> list[list[int]]:
    """The choices at k of the strategies the swap search starts from (besides SLEB's)."""
    return [STRATEGIES[s].select(ctx, k) for s in SWAP_STARTS]


def part_swap(ctx: LayerScores, k: int) -> list[int]:
    if k % 2:
        raise ValueError(f"part-swap removes attention and MLP sub-blocks in pairs (k/2 blocks' worth): k must be even, got {k}")
    return ctx.part_swap(k // 2, swap_starts(ctx, k // 2)).removed


STRATEGIES: dict[str, Strategy] = {
    "block-influence": Strategy(_top_k("block-influence"), cite=SCORES["block-influence"].cite),
    "angular": Strategy(_top_k("angular"), cite=SCORES["angular"].cite),
    "angular-block": Strategy(_angular_block("last"), cite="Gromov et al. 2024, arXiv:2403.17887"),
    "angular-block-all": Strategy(_angular_block("all"), cite="Gromov et al. 2024, arXiv:2403.17887 (all tokens)"),
    "ablation-nll": Strategy(_top_k("ablation-nll"), needs_model=True, cite="one-layer-out ablation"),
    "ablation-kl": Strategy(_top_k("ablation-kl"), needs_model=True, cite="one-layer-out KL"),
    "taylor": Strategy(_top_k("taylor"), needs_model=True, cite="Kim et al. 2024, arXiv:2402.02834"),
    "taylor+": Strategy(taylor_plus, needs_model=True, cite="Taylor+, Kim et al. 2024, arXiv:2402.02834"),
    "contiguous-nll": Strategy(contiguous_nll, needs_model=True, cite="best contiguous run by one-layer-out ΔNLL"),
    "reverse": Strategy(reverse, nested=True, cite="Lu et al. 2024, arXiv:2411.15558"),
    "sleb": Strategy(lambda ctx, k: ctx.greedy(k, "layer").chosen(k), needs_model=True, nested=True,
                     cite="SLEB, Song et al. 2024, arXiv:2402.09025", search=True),
    "swap-search": Strategy(lambda ctx, k: ctx.swap(k, swap_starts(ctx, k)).removed,
                            needs_model=True, cite="multi-start swap search on the calibration loss", search=True),
    "sublayer-nll": Strategy(_top_k("sublayer-nll"), granularity="sublayer", needs_model=True,
                             cite="one-sub-block-out ablation"),
    "part-swap": Strategy(part_swap, granularity="sublayer", needs_model=True, search=True, paired=True,
                          cite="swap-search, then attention swaps (He et al. 2024, arXiv:2406.15786)"),
    "blockpruner": Strategy(lambda ctx, k: ctx.greedy(k, "sublayer").chosen(k), granularity="sublayer",
                            needs_model=True, nested=True, cite="BlockPruner, Zhong et al. 2024, arXiv:2406.10594", search=True),
}


SWAP_STARTS = ("angular-block", "angular-block-all", "contiguous-nll", "ablation-kl", "block-influence")  # + SLEB


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise UnknownStrategyError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    return STRATEGIES[name]


def as_scores(source: LayerSimilarity | LayerScores) -> LayerScores:
    if isinstance(source, LayerScores):
        return source
    if isinstance(source, LayerSimilarity):
        return LayerScores(source)
    raise TypeError(f"expected a LayerSimilarity or LayerScores, got {type(source).__name__}")


def select_layers(source: LayerSimilarity | LayerScores, k: int, strategy: str = "block-influence") -> list[int]:
    """The sorted ids of the ``k`` units that ``strategy`` (a key of ``STRATEGIES``) removes.

    ``source`` is a ``LayerSimilarity`` for the proxy strategies, or a ``LayerScores`` (which
    also carries the model and calibration blocks) for any strategy. Blocks for layer strategies,
    sub-block ids for ``"sublayer-nll"`` and ``"blockpruner"``.
    """
    spec = get_strategy(strategy)
    ctx = as_scores(source)
    check_k(k, ctx.num_layers, spec.granularity)
    return sorted(int(u) for u in spec.select(ctx, int(k)))
