"""Comparing healing recipes: the recovery table (its figures are in ``frankenllama.figures.healing``).

Gap recovered. With ``P_0`` the unpruned model's eval perplexity, ``P_b`` the pruned model's
before healing and ``P_a`` after, the share of the pruning damage a recipe wins back is::

    recovered = (P_b − P_a) / (P_b − P_0) · 100 %

100 % means the healed model is as good as the unpruned one; it can exceed 100 % when healing on
in-domain text beats the original, and is negative when healing hurts. We also give it in nats
(``log P``, i.e. mean NLL), which is the scale the training loss lives on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from frankenllama.healing.result import HealResult


def gap_recovered(before: float, after: float, reference: float, log: bool = False) -> float:
    """Percentage of the gap ``before − reference`` closed by ``after`` (in perplexity, or in log-perplexity)."""
    if log:
        before, after, reference = math.log(before), math.log(after), math.log(reference)
    gap = before - reference
    if gap == 0:
        return float("nan")
    return 100.0 * (before - after) / gap


def recovery_table(results: Sequence[HealResult], reference_ppl: float) -> pd.DataFrame:
    """One row per recipe: PPL before/after, % of the gap recovered (PPL and NLL), tokens, time, tokens/s,
    and the seconds of the one teacher pass whose top-k targets the distillation recipes share."""
    rows = []
    for r in results:
        if r.ppl_before is None or r.ppl_after is None:
            raise ValueError(f"result of {r.config.recipe!r} has no eval perplexity: heal it with eval_blocks=")
        rows.append(
            {
                "recipe": r.config.recipe,
                "train tokens": r.tokens_seen,
                "calib tokens": r.calib_tokens,
                "PPL before": r.ppl_before,
                "PPL after": r.ppl_after,
                "gap recovered (%)": gap_recovered(r.ppl_before, r.ppl_after, reference_ppl),
                "gap recovered, NLL (%)": gap_recovered(r.ppl_before, r.ppl_after, reference_ppl, log=True),
                "heal time (s)": r.train_time_s,
                "tokens/s": r.tokens_per_s if r.tokens_seen else float("nan"),
                "teacher pass (s)": r.teacher_time_s,  # the shared teacher-target pass, where this run filled it
            }
        )
    return pd.DataFrame(rows)
