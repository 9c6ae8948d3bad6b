"""Which blocks to remove: one registry of selection strategies keyed by short names.

``select_layers(source, k, strategy)`` returns the sorted ids of the ``k`` units ``strategy`` removes.
``source`` is a ``LayerSimilarity`` (enough for the similarity proxies) or a
``frankenllama.scoring.SelectionContext`` (the similarity plus the model and calibration blocks, for
the strategies that measure the model). Units are blocks ``0 … L-1``, or for the sub-layer strategies
sub-blocks ``0 … 2L-1`` (``2ℓ`` attention, ``2ℓ+1`` MLP of block ℓ; see ``frankenllama.units``).

The context measures (scans, Taylor, greedy and swap runs, each cached); this module composes them:
which strategies' choices start the swap search, which block choice the part-swap starts from.
``methods_table()`` lists every strategy and score with what it does and what to cite.

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
  (``frankenllama.scoring.swap_search``). Never worse on calibration than any of its starts.

Sub-layer strategies (k counts sub-blocks):

* ``"sublayer-nll"`` — the k sub-blocks of least one-sub-block-out ΔNLL.
* ``"blockpruner"`` — iterative greedy over attention and MLP sub-blocks (BlockPruner, Zhong et al.
  2024, arXiv:2406.10594). Nested in k.
* ``"part-swap"`` — the sub-blocks of swap-search's k/2 blocks, then swaps of one kind for the same
  kind while the calibration NLL drops: put back the attention of a removed block, remove the
  attention of a kept block instead (``frankenllama.scoring.part_swap_search``). A whole-block
  choice takes an attention that matters along with a cheap MLP; attention sub-blocks elsewhere
  are far more redundant (He et al. 2024, arXiv:2406.15786). Every swap keeps as many attention
  and MLP sub-blocks removed, so the model has exactly the size of k/2 blocks removed (k even).
  One swap by default (``SelectionContext.part_swap``'s ``rounds``), a CPU time budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from frankenllama.scoring import SCORES, SelectionContext
from frankenllama.similarity import LayerSimilarity
from frankenllama.units import num_units


class UnknownStrategyError(KeyError):
    """A strategy name that is not a key of ``STRATEGIES``."""


KINDS: dict[str, str] = {  # what a strategy (or score) reads; the "kind" column of ``methods_table``
    "proxy": "residual-stream similarity only",
    "rule": "nothing but the number of blocks",
    "measured": "the model on calibration blocks (ablation or gradients)",
    "search": "the model, searching configurations (many calibration passes per k)",
}


@dataclass(frozen=True)
class Strategy:
    """A registered selection strategy.

    ``select(ctx, k)`` returns k unit ids (any order); ``granularity`` is ``"layer"`` or
    ``"sublayer"``; ``kind`` is a key of ``KINDS`` (what it reads); ``nested`` whether its choice at k
    always contains its choice at k−1; ``paired`` whether a sub-layer strategy removes as many
    attention as MLP sub-blocks (k even: the size of k/2 whole blocks); ``what`` and ``cite`` (the
    paper and arXiv id, or "this workbook") fill ``methods_table``.
    """

    select: Callable[[SelectionContext, int], list[int]]
    kind: str
    what: str
    cite: str
    granularity: str = "layer"
    nested: bool = False
    paired: bool = False  # (sub-layer) removes attention and MLP sub-blocks in equal numbers: k even, k/2 blocks' worth

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown strategy kind {self.kind!r}; use one of {sorted(KINDS)}")

    @property
    def needs_model(self) -> bool:
        """Whether it measures the model (ablation, gradients, search), so needs a ``SelectionContext`` with one."""
        return self.kind in ("measured", "search")

    @property
    def search(self) -> bool:
        """A search over configurations (many forward passes per k), not a ranking."""
        return self.kind == "search"


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


def _top_k(score: str) -> Callable[[SelectionContext, int], list[int]]:
    return lambda ctx, k: lowest(ctx.score(score), k)


def _angular_block(tokens: str) -> Callable[[SelectionContext, int], list[int]]:
    def select(ctx: SelectionContext, k: int) -> list[int]:
        distance = ctx.similarity.angular_distance(tokens)  # type: ignore[arg-type]
        return best_run(distance[: distance.shape[0] - k + 1, k - 1], k)

    return select


def taylor_plus(ctx: SelectionContext, k: int) -> list[int]:
    L = ctx.num_layers
    first, last = round(L / 8), round(L / 16)
    candidates = np.arange(first, L - last)
    if k > len(candidates):
        raise ValueError(f"taylor+ keeps the first {first} and last {last} of {L} blocks: at most {len(candidates)} can go, not {k}")
    return lowest(ctx.score("taylor"), k, candidates)


def contiguous_nll(ctx: SelectionContext, k: int) -> list[int]:
    delta = ctx.score("ablation-nll")
    sums = np.convolve(delta, np.ones(k), mode="valid")  # sums[s] = Σ delta[s : s+k]
    return best_run(sums, k)


def reverse(ctx: SelectionContext, k: int) -> list[int]:
    L = ctx.num_layers
    return list(range(L - 1 - k, L - 1))


def greedy(granularity: str) -> Callable[[SelectionContext, int], list[int]]:
    """SLEB (blocks) / BlockPruner (sub-blocks): the first k units of the context's nested greedy run."""
    return lambda ctx, k: ctx.greedy(k, granularity).chosen(k)  # type: ignore[arg-type]


def swap_starts(ctx: SelectionContext, k: int) -> list[list[int]]:
    """The choices at k of the strategies the swap search starts from besides SLEB's (``SWAP_STARTS``)."""
    return [STRATEGIES[s].select(ctx, k) for s in SWAP_STARTS]


def swap(ctx: SelectionContext, k: int) -> list[int]:
    """swap-search: the context's swap search from SLEB's choice, with the ``SWAP_STARTS`` choices as alternatives."""
    alternatives = swap_starts(ctx, k)  # before SLEB's run, the order in which the measurements were always made
    return ctx.swap(greedy("layer")(ctx, k), alternatives).removed


def part_swap(ctx: SelectionContext, k: int) -> list[int]:
    """part-swap: the context's part-swap search from the sub-blocks of swap-search's k/2 blocks."""
    if k % 2:
        raise ValueError(f"part-swap removes attention and MLP sub-blocks in pairs (k/2 blocks' worth): k must be even, got {k}")
    return ctx.part_swap(swap(ctx, k // 2)).removed


_GROMOV = "Gromov et al. 2024, arXiv:2403.17887"
_SLEB = "SLEB, Song et al. 2024, arXiv:2402.09025"
_BLOCKPRUNER = "BlockPruner, Zhong et al. 2024, arXiv:2406.10594"
_TAYLOR = "Kim et al. 2024, arXiv:2402.02834"

STRATEGIES: dict[str, Strategy] = {
    "block-influence": Strategy(_top_k("block-influence"), "proxy", "the k blocks of lowest Block Influence",
                                SCORES["block-influence"].cite),
    "angular": Strategy(_top_k("angular"), "proxy", "the k blocks of lowest one-block angular distance (last token)",
                        SCORES["angular"].cite),
    "angular-block": Strategy(_angular_block("last"), "proxy",
                              "the contiguous k blocks whose input and output are closest (last token)", _GROMOV),
    "angular-block-all": Strategy(_angular_block("all"), "proxy",
                                  "the contiguous k blocks whose input and output are closest (all tokens)",
                                  f"{_GROMOV} (all tokens)"),
    "ablation-nll": Strategy(_top_k("ablation-nll"), "measured", "the k blocks whose removal alone costs the least NLL",
                             SCORES["ablation-nll"].cite),
    "ablation-kl": Strategy(_top_k("ablation-kl"), "measured", "the k blocks whose removal alone costs the least KL",
                            SCORES["ablation-kl"].cite),
    "taylor": Strategy(_top_k("taylor"), "measured", "the k blocks of lowest Taylor importance", f"Taylor, {_TAYLOR}"),
    "taylor+": Strategy(taylor_plus, "measured", "Taylor, never removing the first L/8 and last L/16 blocks",
                        f"Taylor+, {_TAYLOR}"),
    "contiguous-nll": Strategy(contiguous_nll, "measured", "the contiguous k blocks of least summed one-layer-out ΔNLL",
                               f"this workbook (a contiguous run as in {_GROMOV}, scored by one-layer-out ΔNLL)"),
    "reverse": Strategy(reverse, "rule", "the k blocks just before the last one", "Lu et al. 2024, arXiv:2411.15558",
                        nested=True),
    "sleb": Strategy(greedy("layer"), "search", "iterative greedy: remove the block that raises the NLL least, repeat",
                     _SLEB, nested=True),
    "swap-search": Strategy(swap, "search",
                            "best of SLEB and five proxies' choices, then block swaps while the calibration NLL drops",
                            f"this workbook (multi-start swap search refining {_SLEB})"),
    "sublayer-nll": Strategy(_top_k("sublayer-nll"), "measured", "the k sub-blocks whose removal alone costs the least NLL",
                             SCORES["sublayer-nll"].cite, granularity="sublayer"),
    "part-swap": Strategy(part_swap, "search",
                          "swap-search's k/2 blocks as sub-blocks, then attention-for-attention swaps (same size)",
                          "this workbook (swap-search, then attention swaps; He et al. 2024, arXiv:2406.15786)",
                          granularity="sublayer", paired=True),
    "blockpruner": Strategy(greedy("sublayer"), "search", "iterative greedy over attention and MLP sub-blocks",
                            _BLOCKPRUNER, granularity="sublayer", nested=True),
}


SWAP_STARTS = ("angular-block", "angular-block-all", "contiguous-nll", "ablation-kl", "block-influence")  # + SLEB


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise UnknownStrategyError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    return STRATEGIES[name]


def methods_table() -> pd.DataFrame:
    """Every selection strategy and importance score: name, role, granularity, kind, what it does, citation.

    One row per entry of ``STRATEGIES`` (role ``"strategy"``) and of
    ``frankenllama.scoring.SCORES`` (role ``"score"``), in registry order, so a notebook can show
    (or write) the methods it compares with what to cite for each; ``reads`` spells out the kind.
    """
    rows = [{"name": name, "role": "strategy", "granularity": spec.granularity, "kind": spec.kind,
             "what": spec.what, "cite": spec.cite} for name, spec in STRATEGIES.items()]
    rows += [{"name": name, "role": "score", "granularity": score.granularity, "kind": score.kind,
              "what": score.what, "cite": score.cite} for name, score in SCORES.items()]
    table = pd.DataFrame(rows, columns=["name", "role", "granularity", "kind", "what", "cite"])
    table["reads"] = table["kind"].map(KINDS)
    return table


def as_context(source: LayerSimilarity | SelectionContext) -> SelectionContext:
    """``source`` as a ``SelectionContext`` (a bare ``LayerSimilarity`` gets a context without a model)."""
    if isinstance(source, SelectionContext):
        return source
    if isinstance(source, LayerSimilarity):
        return SelectionContext(source)
    raise TypeError(f"expected a LayerSimilarity or SelectionContext, got {type(source).__name__}")



def select_layers(source: LayerSimilarity | SelectionContext, k: int, strategy: str = "block-influence") -> list[int]:
    """The sorted ids of the ``k`` units that ``strategy`` (a key of ``STRATEGIES``) removes.

    ``source`` is a ``LayerSimilarity`` for the proxy strategies, or a ``SelectionContext`` (which
    also carries the model and calibration blocks) for any strategy. Blocks for layer strategies,
    sub-block ids for the sub-layer ones (``"sublayer-nll"``, ``"blockpruner"``, ``"part-swap"``).
    """
    spec = get_strategy(strategy)
    ctx = as_context(source)
    check_k(k, ctx.num_layers, spec.granularity)
    return sorted(int(u) for u in spec.select(ctx, int(k)))
