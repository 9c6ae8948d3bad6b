"""Comparing healing recipes: the recovery table and its two figures.

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
import matplotlib.pyplot as plt
import pandas as pd

from frankenllama.healing.pipeline import HealResult
from frankenllama.plotting import COLUMN_WIDTH, PALETTE


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


def plot_ppl_vs_tokens(results: Sequence[HealResult], reference_ppl: float, unhealed_ppl: float) -> plt.Figure:
    """Eval perplexity against training tokens, one line per recipe, with the unpruned and unhealed levels."""
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.6))
    for i, r in enumerate(results):
        xs = [c["tokens"] / 1000 for c in r.curve]
        ys = [c["ppl"] for c in r.curve]
        style = {"marker": "o", "markersize": 3} if len(xs) > 1 else {"marker": "*", "markersize": 8, "linestyle": ""}
        ax.plot(xs, ys, color=PALETTE[i % len(PALETTE)], label=r.config.recipe, **style)
    ax.axhline(reference_ppl, color="0.3", linestyle="--", linewidth=0.8, label="unpruned")
    ax.axhline(unhealed_ppl, color="0.6", linestyle=":", linewidth=0.8, label="pruned, unhealed")
    ax.set_xlabel("training tokens (thousands)")
    ax.set_ylabel("eval perplexity")
    ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    return fig


def plot_losses(results: Sequence[HealResult], key: str = "loss") -> plt.Figure:
    """Training loss against tokens for every trained recipe (KD losses are on their own scale)."""
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.6))
    for i, r in enumerate(results):
        if not any(key in row for row in r.losses):
            continue
        rows = [row for row in r.losses if key in row]
        ax.plot(
            [row["tokens"] / 1000 for row in rows],
            [row[key] for row in rows],
            color=PALETTE[i % len(PALETTE)],
            label=r.config.recipe,
            linewidth=1,
        )
    ax.set_xlabel("training tokens (thousands)")
    ax.set_ylabel("training loss (nats)" if key == "ce" else "training loss")
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig
