"""Comparing healing recipes: the recovery table (its figures are in ``frankenllama.figures.healing``).

Gap recovered. With ``P_0`` the unpruned model's eval perplexity, ``P_b`` the pruned model's
before healing and ``P_a`` after, the share of the pruning damage a recipe wins back is::

    recovered = (P_b − P_a) / (P_b − P_0) · 100 %

100 % means the healed model is as good as the unpruned one; it can exceed 100 % when healing on
in-domain text beats the original, and is negative when healing hurts. We also give it in nats
(``log P``, i.e. mean NLL), which is the scale the training loss lives on.

Two domains. The table reports the gap on the held-out blocks of the healing corpus (**in-domain**,
``(in)`` columns) and, where the run measured them, on blocks of a corpus that no recipe trains or
calibrates on (**out-of-domain**, ``(out)`` columns; ``olmo-passages`` in the notebooks). Training on
one domain can close its gap while leaving another's open.

Intervals. The NLL gap recovered is a ratio of means over the same blocks,
``100 · mean(b − a) / mean(b − r)`` with ``b``, ``a``, ``r`` the per-block mean NLLs before healing,
after, and of the unpruned model; its 95 % interval is the paired bootstrap over blocks of
``frankenllama.eval.paired.retained`` (the blocks resampled jointly for all three models).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from frankenllama.eval.paired import DEFAULT_N_BOOT, retained
from frankenllama.healing.result import HealResult


def gap_recovered(before: float, after: float, reference: float, log: bool = False) -> float:
    """Percentage of the gap ``before − reference`` closed by ``after`` (in perplexity, or in log-perplexity)."""
    if log:
        before, after, reference = math.log(before), math.log(after), math.log(reference)
    gap = before - reference
    if gap == 0:
        return float("nan")
    return 100.0 * (before - after) / gap


def nll_gap_interval(
    before: Sequence[float], after: Sequence[float], reference: Sequence[float], n_boot: int = DEFAULT_N_BOOT, seed: int = 0
) -> tuple[float, float]:
    """95 % paired bootstrap interval over blocks of the NLL gap recovered (%), from per-block mean NLLs.

    ``(nan, nan)`` when the blocks are missing or the pruned model is not worse than the reference
    on average (no gap to recover).
    """
    if any(v is None or len(v) == 0 for v in (before, after, reference)) or not len(before) == len(after) == len(reference):
        return float("nan"), float("nan")
    b, a, r = (np.asarray(v, dtype=np.float64) for v in (before, after, reference))
    if (b - r).mean() <= 0:
        return float("nan"), float("nan")
    share = retained(b - a, b - r, n_boot=n_boot, seed=seed)
    return share.low, share.high


def _domain_columns(r: HealResult, domain: str, reference_ppl: float | None,
                    reference_nll: Sequence[float] | None, n_boot: int, seed: int) -> dict[str, float]:  # fmt: skip
    """The recovery columns of one domain (``"in"`` or ``"out"``) for one result."""
    suffix = "" if domain == "in" else "_ood"
    before, after = getattr(r, f"ppl_before{suffix}"), getattr(r, f"ppl_after{suffix}")
    if before is None or after is None or reference_ppl is None:
        return {}
    low, high = nll_gap_interval(r.block_nll.get(f"before{suffix}"), r.block_nll.get(f"after{suffix}"),
                                 reference_nll, n_boot, seed)  # fmt: skip
    return {
        f"PPL before ({domain})": before,
        f"PPL after ({domain})": after,
        f"gap recovered % ({domain})": gap_recovered(before, after, reference_ppl),
        f"gap recovered NLL % ({domain})": gap_recovered(before, after, reference_ppl, log=True),
        f"NLL low ({domain})": low,
        f"NLL high ({domain})": high,
    }


def recovery_table(
    results: Sequence[HealResult],
    reference_ppl: float,
    reference_ppl_ood: float | None = None,
    reference_nll: Mapping[str, Sequence[float] | None] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per recipe: per domain PPL before/after and % of the gap recovered (PPL and NLL, with the
    NLL share's 95 % interval over blocks), then tokens, time, tokens/s and the seconds of the one
    teacher pass whose top-k targets the distillation recipes share.

    ``reference_ppl`` / ``reference_ppl_ood``: the unpruned model's in- and out-of-domain eval
    perplexity; ``reference_nll``: its per-block mean NLLs ``{"in": …, "out": …}`` (intervals need them).
    """
    reference_nll = reference_nll or {}
    rows = []
    for r in results:
        if r.ppl_before is None or r.ppl_after is None:
            raise ValueError(f"result of {r.config.recipe!r} has no eval perplexity: heal it with eval_blocks=")
        rows.append({
            "recipe": r.config.recipe,
            "train tokens": r.tokens_seen,
            "calib tokens": r.calib_tokens,
            **_domain_columns(r, "in", reference_ppl, reference_nll.get("in"), n_boot, seed),
            **_domain_columns(r, "out", reference_ppl_ood, reference_nll.get("out"), n_boot, seed),
            "heal time (s)": r.train_time_s,
            "tokens/s": r.tokens_per_s if r.tokens_seen else float("nan"),
            "teacher pass (s)": r.teacher_time_s,  # the shared teacher-target pass, where this run filled it
        })  # fmt: skip
    return pd.DataFrame(rows)
