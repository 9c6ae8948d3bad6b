"""Paired comparisons of two models scored on the same items.

When two models answer the *same* items, the noise that matters is the variation of the per-item
*difference*, not of each model's score alone: items that are hard for one model are hard for the
other, so the paired interval is much narrower than two independent binomial intervals
(Dror et al. 2018, "The Hitchhiker's Guide to Testing Statistical Significance in NLP", ACL;
Card et al. 2020, "With Little Power Comes Great Responsibility", EMNLP).

* ``paired_difference`` — mean of ``x − y`` over items with a 95 % **paired percentile bootstrap**
  interval: the items are resampled with replacement, the *same* resampled items for both models
  (Efron & Tibshirani 1993, ch. 13; Koehn 2004, "Statistical Significance Tests for Machine
  Translation Evaluation", EMNLP).
* ``mcnemar`` — for 0/1 accuracies, the exact McNemar test: under "the two models are equally
  accurate" each discordant item (right for one, wrong for the other) is a fair coin, so the
  two-sided p-value is the binomial test of the discordant counts at 1/2 (McNemar 1947;
  Edwards 1948; ``scipy.stats.binomtest``).
* ``retained`` — "% retained" = ``100 × mean(x) / mean(y)`` with its paired bootstrap interval
  (ratio of means, items resampled jointly).

With ``groups`` (one label per item, e.g. the task), the statistic is the **macro** mean — the mean
over groups of each group's mean, as a table's "average" column over tasks — and the bootstrap
resamples items within each group (stratified), so every resample keeps each task's item count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

DEFAULT_N_BOOT = 2000
DEFAULT_LEVEL = 0.95
_CHUNK = 256  # resamples drawn at once: bounds memory at _CHUNK × items indices


@dataclass(frozen=True)
class PairedDifference:
    """``diff = mean(x) − mean(y)`` (macro mean over groups when grouped) and its bootstrap interval."""

    n: int
    mean_x: float
    mean_y: float
    diff: float
    low: float
    high: float
    level: float
    n_boot: int

    @property
    def half_width(self) -> float:
        """Half the interval's width: the resolution of the comparison."""
        return (self.high - self.low) / 2

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (a difference the items support at this level)."""
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Retained:
    """``percent = 100 × mean(x) / mean(y)`` and its paired bootstrap interval."""

    n: int
    percent: float
    low: float
    high: float
    level: float
    n_boot: int


@dataclass(frozen=True)
class McNemar:
    """Discordant counts of two 0/1 arrays and the exact two-sided McNemar p-value."""

    n: int
    only_x: int  # items x got right and y wrong
    only_y: int  # items y got right and x wrong
    p_value: float


def _pair(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"x and y must be 1-D arrays over the same items, got shapes {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("no items to compare")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("x and y must be finite (a NaN or inf per-item score cannot be averaged)")
    return a, b


def _group_index(groups: Sequence | np.ndarray | None, n: int) -> list[np.ndarray]:
    """Item indices of each group (one group of all items when ``groups`` is None)."""
    if groups is None:
        return [np.arange(n)]
    labels = np.asarray(groups)
    if labels.shape != (n,):
        raise ValueError(f"groups needs one label per item ({n}), got shape {labels.shape}")
    return [np.flatnonzero(labels == g) for g in dict.fromkeys(labels.tolist())]


def _macro_mean(values: np.ndarray, index: list[np.ndarray]) -> float:
    return float(np.mean([values[i].mean() for i in index]))


def _resampled_means(
    arrays: Sequence[np.ndarray], index: list[np.ndarray], n_boot: int, seed: int
) -> list[np.ndarray]:
    """Macro means of each array under the same ``n_boot`` stratified resamples of the items."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    rng = np.random.default_rng(seed)
    out = [np.empty(n_boot) for _ in arrays]
    for start in range(0, n_boot, _CHUNK):
        m = min(_CHUNK, n_boot - start)
        group_means = [np.zeros(m) for _ in arrays]
        for idx in index:
            draw = idx[rng.integers(0, idx.size, size=(m, idx.size))]  # (m, n_group) resampled item ids
            for acc, values in zip(group_means, arrays):
                acc += values[draw].mean(axis=1)
        for o, acc in zip(out, group_means):
            o[start : start + m] = acc / len(index)
    return out


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def paired_difference(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    groups: Sequence | np.ndarray | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> PairedDifference:
    """Mean difference ``x − y`` over paired items with a percentile paired-bootstrap interval.

    Args:
        x, y: per-item scores of two models on the same items, in the same order (``(n,)``).
        groups: optional per-item labels (tasks): macro mean and stratified resampling.
        n_boot: bootstrap resamples; ``seed`` makes them reproducible.
        level: coverage of the interval (0.95: the 2.5th and 97.5th percentiles).
    """
    a, b = _pair(x, y)
    index = _group_index(groups, a.size)
    (boot,) = _resampled_means([a - b], index, n_boot, seed)
    low, high = _interval(boot, level)
    mx, my = _macro_mean(a, index), _macro_mean(b, index)
    return PairedDifference(a.size, mx, my, mx - my, low, high, level, n_boot)


def retained(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    groups: Sequence | np.ndarray | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> Retained:
    """``100 × mean(x) / mean(y)`` ("% of the reference retained") with a paired bootstrap interval.

    The ratio of (macro) means is recomputed on every joint resample of the items; ``y`` (the
    reference) must have a positive mean.
    """
    a, b = _pair(x, y)
    index = _group_index(groups, a.size)
    if _macro_mean(b, index) <= 0:
        raise ValueError("the reference's mean must be positive for a percentage retained")
    boot_x, boot_y = _resampled_means([a, b], index, n_boot, seed)
    ratio = 100 * boot_x / np.where(boot_y > 0, boot_y, np.nan)
    low, high = _interval(ratio[np.isfinite(ratio)], level)
    percent = 100 * _macro_mean(a, index) / _macro_mean(b, index)
    return Retained(a.size, percent, low, high, level, n_boot)


def mcnemar(x: Sequence[int] | np.ndarray, y: Sequence[int] | np.ndarray) -> McNemar:
    """Exact McNemar test of two 0/1 per-item accuracies on the same items.

    p-value: two-sided ``binomtest(only_x, only_x + only_y, 0.5)``; 1.0 when no item is discordant.
    """
    a, b = _pair(x, y)
    if not (np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all()):
        raise ValueError("McNemar's test needs 0/1 per-item accuracies")
    only_x = int(np.sum((a == 1) & (b == 0)))
    only_y = int(np.sum((a == 0) & (b == 1)))
    discordant = only_x + only_y
    p = 1.0 if discordant == 0 else float(binomtest(only_x, discordant, 0.5).pvalue)
    return McNemar(a.size, only_x, only_y, p)
