"""Which blocks to remove: a registry of selection strategies keyed by short names.

Each strategy maps a ``LayerSimilarity`` and a number of blocks ``k`` to the sorted indices of the
``k`` blocks to remove.

* ``"block-influence"`` — the k blocks with the lowest Block Influence (ShortGPT, Men et al. 2024,
  arXiv:2403.03853); the blocks need not be contiguous.
* ``"angular-block"`` — the contiguous run of k blocks whose input and output are closest in
  last-token angular distance, ``argmin_ℓ d(ℓ, k)`` (Gromov et al. 2024, arXiv:2403.17887).
* ``"angular-block-all"`` — the same on the all-token average of the angular distance.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from frankenllama.similarity import LayerSimilarity

Strategy = Callable[[LayerSimilarity, int], list[int]]


def check_k(k: int, num_layers: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer number of layers, got {k!r}")
    if not 1 <= k <= num_layers - 1:
        raise ValueError(f"k = {k} is outside 1 … {num_layers - 1}: the model has {num_layers} layers and keeps at least one")


def block_influence(similarity: LayerSimilarity, k: int) -> list[int]:
    order = np.argsort(similarity.block_influence, kind="stable")
    return sorted(int(i) for i in order[:k])


def _best_block(distance: np.ndarray, k: int) -> list[int]:
    column = distance[: distance.shape[0] - k + 1, k - 1]  # d(ℓ, k) for every valid start ℓ
    start = int(np.nanargmin(column))
    return list(range(start, start + k))


def angular_block(similarity: LayerSimilarity, k: int) -> list[int]:
    return _best_block(similarity.angular_distance("last"), k)


def angular_block_all(similarity: LayerSimilarity, k: int) -> list[int]:
    return _best_block(similarity.angular_distance("all"), k)


STRATEGIES: dict[str, Strategy] = {
    "block-influence": block_influence,
    "angular-block": angular_block,
    "angular-block-all": angular_block_all,
}


def select_layers(similarity: LayerSimilarity, k: int, strategy: str = "block-influence") -> list[int]:
    """The sorted indices of the ``k`` blocks that ``strategy`` (a key of ``STRATEGIES``) removes."""
    if strategy not in STRATEGIES:
        raise KeyError(f"unknown strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
    check_k(k, similarity.num_layers)
    return STRATEGIES[strategy](similarity, int(k))
