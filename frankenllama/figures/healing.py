"""Notebook 03's figures: eval perplexity against training tokens, and the training-loss curves.

Both take the ``HealResult``s of ``frankenllama.stages.healing.healing_stage`` (one line per
recipe, in the order the recipes ran); the table of the same results is
``frankenllama.healing.report.recovery_table``.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt

from frankenllama.healing.result import HealResult
from frankenllama.figures.style import COLUMN_WIDTH, PALETTE


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
