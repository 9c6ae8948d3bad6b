"""Notebook 03's figures: eval perplexity against training tokens, the training-loss curves, and the explorer.

Both take the ``HealResult``s of ``frankenllama.stages.healing.healing_stage`` (one line per
recipe, in the order the recipes ran); the table of the same results is
``frankenllama.healing.report.recovery_table``.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt

from frankenllama.healing.result import HealResult
from frankenllama.figures.explorer import explorer
from frankenllama.figures.style import COLUMN_WIDTH, PALETTE, TEXT_WIDTH


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


def _recipe_view(results: Sequence[HealResult], recipe: str, tokens: int, reference_ppl: float, unhealed_ppl: float,
                 width: float) -> plt.Figure:
    """Training loss and eval perplexity against tokens: ``recipe`` in colour at ``tokens``, the others in grey."""
    fig, (loss_ax, ppl_ax) = plt.subplots(1, 2, figsize=(width, 2.9), layout="constrained")
    for i, r in enumerate(results):
        chosen = r.config.recipe == recipe
        style = {"color": PALETTE[i % len(PALETTE)] if chosen else "0.75", "lw": 1.4 if chosen else 0.8,
                 "zorder": 3 if chosen else 2}
        rows = [row for row in r.losses if "ce" in row]
        loss_ax.plot([row["tokens"] / 1000 for row in rows], [row["ce"] for row in rows], marker="o", ms=2.5, **style)
        ppl_ax.plot([c["tokens"] / 1000 for c in r.curve], [c["ppl"] for c in r.curve], marker="o", ms=3, **style)
        if chosen:
            point = min(r.curve, key=lambda c: abs(c["tokens"] - tokens))
            ppl_ax.plot(point["tokens"] / 1000, point["ppl"], "o", ms=8, mfc="none", mec="black", zorder=4)
            for ax in (loss_ax, ppl_ax):
                ax.axvline(tokens / 1000, color="0.4", lw=0.8, ls=":")
            if not rows:
                loss_ax.text(0.5, 0.5, f"{recipe}: training-free", ha="center", va="center", transform=loss_ax.transAxes)
    ppl_ax.axhline(reference_ppl, color="0.3", ls="--", lw=0.8, label="unpruned")
    ppl_ax.axhline(unhealed_ppl, color="0.6", ls=":", lw=0.8, label="pruned, unhealed")
    loss_ax.set_xlabel("training tokens (thousands)")
    loss_ax.set_ylabel("training cross-entropy (nats)")
    ppl_ax.set_xlabel("training tokens (thousands)")
    ppl_ax.set_ylabel("eval perplexity (in-domain)")
    fig.legend(loc="outside lower center", ncol=2, fontsize="small")  # below the panels, never on a curve
    fig.suptitle(f"{recipe} after {tokens:,} training tokens: eval PPL {point['ppl']:.2f}", fontsize="medium")
    return fig


def recipe_explorer(results: Sequence[HealResult], reference_ppl: float, unhealed_ppl: float, width: float = TEXT_WIDTH):
    """An explorer over the cached healing runs: a recipe, then one of its evaluation points (training tokens).

    Shows the training cross-entropy and the eval perplexity curves of every recipe (the chosen one in
    colour) with the chosen point marked; opens on the recipe that ends lowest. In-domain only: the eval split of the healing corpus.
    Reads the ``HealResult``s of ``healing_stage``; nothing is recomputed.
    """
    choices = {r.config.recipe: sorted({int(c["tokens"]) for c in r.curve}) for r in results if r.curve}
    # opens on the recipe of lowest final eval perplexity, at its last evaluation point
    first = min((r for r in results if r.curve), key=lambda r: r.curve[-1]["ppl"]).config.recipe
    return explorer(
        choices, lambda recipe, tokens: _recipe_view(results, recipe, tokens, reference_ppl, unhealed_ppl, width),
        ("recipe", "tokens"), (first, max(choices.get(first, [0]))),
        caption="Training loss and in-domain eval perplexity (the corpus's eval split) at each evaluation point of "
                "each recipe's run; out-of-domain text is not measured yet.")
