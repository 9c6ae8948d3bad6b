"""Notebook 03's figures: eval perplexity against training tokens (in and out of domain), the training-loss
curves, and the explorer.

All take the ``HealResult``s of ``frankenllama.stages.healing.healing_stage`` (one line per
recipe, in the order the recipes ran); the table of the same results is
``frankenllama.healing.report.recovery_table``. In-domain perplexity is on the eval split of the
healing corpus (curve key ``ppl``), out-of-domain perplexity on the eval-only corpus no recipe trains
or calibrates on (curve key ``ppl_ood``; its panel is drawn only where the runs measured it).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt

from frankenllama.healing.result import HealResult
from frankenllama.figures.explorer import explorer
from frankenllama.figures.style import COLUMN_WIDTH, PALETTE, TEXT_WIDTH

DOMAIN_LABELS = {"ppl": "eval perplexity, in-domain", "ppl_ood": "eval perplexity, out-of-domain"}


def _domains(results: Sequence[HealResult], reference_ppl: float, unhealed_ppl: float, reference_ppl_ood: float | None,
             unhealed_ppl_ood: float | None) -> dict[str, tuple[float, float]]:  # fmt: skip
    """Curve key → (unpruned, unhealed) perplexity, for every domain all runs' curves measured."""
    levels = {"ppl": (reference_ppl, unhealed_ppl)}
    curves = [c for r in results for c in r.curve]
    if reference_ppl_ood is not None and curves and all("ppl_ood" in c for c in curves):
        levels["ppl_ood"] = (reference_ppl_ood, unhealed_ppl_ood)
    return levels


def _ppl_panel(ax: plt.Axes, results: Sequence[HealResult], key: str, levels: tuple[float, float],
               chosen: str | None = None) -> None:  # fmt: skip
    """One perplexity-vs-tokens panel: a line per recipe (only ``chosen`` in colour when given) and the two levels."""
    for i, r in enumerate(results):
        xs, ys = [c["tokens"] / 1000 for c in r.curve], [c[key] for c in r.curve]
        mine = chosen is None or r.config.recipe == chosen
        color = PALETTE[i % len(PALETTE)] if mine else "0.75"
        style = {"marker": "o", "markersize": 3} if len(xs) > 1 else {"marker": "*", "markersize": 8, "linestyle": ""}
        ax.plot(xs, ys, color=color, label=r.config.recipe if chosen is None else None, zorder=3 if mine else 2,
                lw=1.4 if mine and chosen else 1.0, **style)  # fmt: skip
    ax.axhline(levels[0], color="0.3", linestyle="--", linewidth=0.8, label="unpruned")
    if levels[1] is not None:
        ax.axhline(levels[1], color="0.6", linestyle=":", linewidth=0.8, label="pruned, unhealed")
    ax.set_xlabel("training tokens (thousands)")
    ax.set_ylabel(DOMAIN_LABELS[key])


def plot_ppl_vs_tokens(results: Sequence[HealResult], reference_ppl: float, unhealed_ppl: float,
                       reference_ppl_ood: float | None = None, unhealed_ppl_ood: float | None = None) -> plt.Figure:  # fmt: skip
    """Eval perplexity against training tokens, one line per recipe, with the unpruned and unhealed levels;
    a second panel out of domain where the runs measured it."""
    levels = _domains(results, reference_ppl, unhealed_ppl, reference_ppl_ood, unhealed_ppl_ood)
    fig, axes = plt.subplots(1, len(levels), figsize=(COLUMN_WIDTH * len(levels), 2.6), squeeze=False)
    for ax, (key, level) in zip(axes[0], levels.items()):
        _ppl_panel(ax, results, key, level)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4, fontsize="x-small")  # below, off the curves
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


def _recipe_view(results: Sequence[HealResult], recipe: str, tokens: int, levels: dict[str, tuple[float, float]],
                 width: float) -> plt.Figure:  # fmt: skip
    """Training loss and eval perplexity (each domain) against tokens: ``recipe`` in colour at ``tokens``."""
    fig, axes = plt.subplots(1, 1 + len(levels), figsize=(width, 2.9), layout="constrained")
    loss_ax = axes[0]
    for i, r in enumerate(results):
        chosen = r.config.recipe == recipe
        rows = [row for row in r.losses if "ce" in row]
        loss_ax.plot([row["tokens"] / 1000 for row in rows], [row["ce"] for row in rows], marker="o", ms=2.5,
                     color=PALETTE[i % len(PALETTE)] if chosen else "0.75", lw=1.4 if chosen else 0.8,
                     zorder=3 if chosen else 2)  # fmt: skip
        if chosen:
            point = min(r.curve, key=lambda c: abs(c["tokens"] - tokens))
            if not rows:
                loss_ax.text(0.5, 0.5, f"{recipe}:\ntraining-free", ha="center", va="center", transform=loss_ax.transAxes)
    for ax, (key, level) in zip(axes[1:], levels.items()):
        _ppl_panel(ax, results, key, level, chosen=recipe)
        ax.plot(point["tokens"] / 1000, point[key], "o", ms=8, mfc="none", mec="black", zorder=4)
    for ax in axes:
        ax.axvline(point["tokens"] / 1000, color="0.4", lw=0.8, ls=":")
    loss_ax.set_xlabel("training tokens (thousands)")
    loss_ax.set_ylabel("training cross-entropy (nats)")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize="small")  # below the panels, never on a curve
    title = ", ".join(f"{'in' if k == 'ppl' else 'out-of'}-domain PPL {point[k]:.2f}" for k in levels)
    fig.suptitle(f"{recipe} after {point['tokens']:,} training tokens: {title}", fontsize="medium")
    return fig


def recipe_explorer(results: Sequence[HealResult], reference_ppl: float, unhealed_ppl: float,
                    reference_ppl_ood: float | None = None, unhealed_ppl_ood: float | None = None,
                    width: float = TEXT_WIDTH):  # fmt: skip
    """An explorer over the cached healing runs: a recipe, then one of its evaluation points (training tokens).

    Shows the training cross-entropy and the eval perplexity curves of every recipe, in domain and
    (where measured) out of domain, the chosen one in colour with the chosen point marked; opens on
    the recipe that ends lowest in domain. Reads the ``HealResult``s of ``healing_stage``; nothing is
    recomputed.
    """
    levels = _domains(results, reference_ppl, unhealed_ppl, reference_ppl_ood, unhealed_ppl_ood)
    choices = {r.config.recipe: sorted({int(c["tokens"]) for c in r.curve}) for r in results if r.curve}
    # opens on the recipe of lowest final eval perplexity, at its last evaluation point
    first = min((r for r in results if r.curve), key=lambda r: r.curve[-1]["ppl"]).config.recipe
    ood = "and out-of-domain text (an eval-only corpus no recipe trains or calibrates on)" if "ppl_ood" in levels else \
        "(out-of-domain text was not measured in these runs)"  # fmt: skip
    return explorer(
        choices, lambda recipe, tokens: _recipe_view(results, recipe, tokens, levels, width),
        ("recipe", "tokens"), (first, max(choices.get(first, [0]))),
        caption=f"Training loss and eval perplexity at each evaluation point of each recipe's run, on in-domain text "
                f"(the healing corpus's eval split) {ood}.")
