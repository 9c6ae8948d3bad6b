"""How much each block (or sub-block) matters, measured on the model: scores, ablations, searches.

* ``trunk`` — ``Trunk``, the decoder stack run block by block from cached residual streams, with
  the vocabulary lower bound that lets a search abandon hopeless candidates exactly.
* ``measures`` — the one-unit-out ablation scan (``ablation_scan``, ``AblationScan``) and Taylor
  importance (``taylor_scores``, ``TaylorScores``).
* ``search`` — iterative greedy removal (SLEB / BlockPruner), swap search and part-swap search.
* ``context`` — ``SelectionContext`` (alias ``LayerScores``): what a selection strategy reads, each
  measurement computed once and cached; the ``SCORES`` registry.

Units (blocks, or attention / MLP sub-blocks) and their ids and masks: ``frankenllama.units``.
The strategies that compose these measurements: ``frankenllama.selection``.
"""

from frankenllama.scoring.context import SCORES, LayerScores, Score, SelectionContext, Store, UnknownScoreError
from frankenllama.scoring.measures import AblationScan, TaylorScores, ablation_scan, taylor_scores
from frankenllama.scoring.search import (
    GreedyResult,
    SwapResult,
    greedy_removal,
    part_swap_search,
    swap_search,
    without_layers,
)
from frankenllama.scoring.trunk import BOUND_VOCAB, Trunk
from frankenllama.units import ATTN, GRANULARITIES, MLP, Granularity, num_units, removal_mask

__all__ = [
    "ATTN", "BOUND_VOCAB", "GRANULARITIES", "MLP", "SCORES", "AblationScan", "Granularity", "GreedyResult",
    "LayerScores", "Score", "SelectionContext", "Store", "SwapResult", "TaylorScores", "Trunk", "UnknownScoreError",
    "ablation_scan", "greedy_removal", "num_units", "part_swap_search", "removal_mask", "swap_search",
    "taylor_scores", "without_layers",
]
