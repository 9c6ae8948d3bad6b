"""Figures of notebook 02 (pruning): curves, score profiles, proxy correlation, stability, explorer.

Each figure function builds one figure from a table of the pruning stage and saves it through
``frankenllama.figures.style.save_figure``; ``selection_explorer`` is the notebook's interactive view.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from frankenllama.figures.similarity import draw_block_influence, draw_cosine
from frankenllama.figures.style import COLUMN_WIDTH, PALETTE, TEXT_WIDTH, save_figure
from frankenllama.similarity import LayerSimilarity


def pruning_curves(
    curves: pd.DataFrame, out_dir: Path, name: str = "pruning_curve", baseline: float | None = None, clip: float = 100.0
) -> plt.Figure:
    """Eval perplexity (log scale) vs number of removed layers, one line per strategy.

    Colours repeat after eight strategies, so line styles change with each cycle of the palette; the
    y axis stops at ``clip`` × the unpruned perplexity and points above it are drawn on the edge
    (hollow markers), so one collapsing strategy does not flatten all the others.
    """
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH * 0.75, 3.0))
    markers, styles = "osD^v<>p", ("-", "--", ":")
    top = None if baseline is None else clip * baseline
    for i, (strategy, rows) in enumerate(curves.groupby("strategy", sort=False)):
        rows = rows.sort_values("k")
        ppl = rows["eval_ppl"].to_numpy(dtype=float)
        shown = ppl if top is None else np.minimum(ppl, top)
        style = dict(color=PALETTE[i % len(PALETTE)], marker=markers[i % len(markers)], ms=3.5)
        ax.plot(rows["k"], shown, ls=styles[(i // len(PALETTE)) % len(styles)], lw=1.3, label=strategy, **style)
        if top is not None and (ppl > top).any():
            off = ppl > top
            ax.plot(rows["k"].to_numpy()[off], shown[off], ls="none", mfc="white", **style)
    if baseline is not None:
        ax.axhline(baseline, color="0.5", ls=":", lw=1, label="unpruned")
    ax.set_yscale("log")
    if top is not None:
        ax.set_ylim(baseline * 0.8, top * 1.4)
    ax.set_xlabel("layers removed k")
    ax.set_ylabel("eval perplexity (log scale)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), title=None if top is None else
              f"hollow: above {clip:g}× unpruned", title_fontsize="x-small")
    save_figure(fig, name, out_dir)
    return fig


def proxy_correlation(correlation: pd.DataFrame, out_dir: Path, name: str = "proxy_vs_truth") -> plt.Figure:
    """Spearman ρ of each proxy with the true one-layer-out ΔPPL, with its confidence interval."""
    rows = correlation.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 0.35 * len(rows) + 0.8))
    y = np.arange(len(rows))[::-1]
    ax.errorbar(rows["spearman"], y, xerr=[rows["spearman"] - rows["low"], rows["high"] - rows["spearman"]],
                fmt="o", color=PALETTE[0], ms=4, capsize=2.5, lw=1.2)
    ax.axvline(0, color="0.6", lw=0.8)
    ax.set_yticks(y, rows["proxy"])
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel("Spearman ρ with one-layer-out ΔPPL (95 % CI)")
    save_figure(fig, name, out_dir)
    return fig


def score_profiles(scores: pd.DataFrame, out_dir: Path, name: str = "layer_scores") -> plt.Figure:
    """Every importance score per layer, rank-normalised to 0 … 1 (1 = most important), one line each."""
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH * 0.7, 2.6))
    markers = "osD^v<>p"
    for i, column in enumerate(scores.columns):
        ranks = scores[column].rank() - 1
        ax.plot(scores.index, ranks / ranks.max(), marker=markers[i % len(markers)], ms=3, lw=1.1,
                color=PALETTE[i % len(PALETTE)], label=column)
    ax.set_xlabel("layer ℓ")
    ax.set_ylabel("importance rank (0 = least)")
    ax.legend(fontsize="small", ncol=2, loc="upper center", bbox_to_anchor=(0.5, 1.35))
    save_figure(fig, name, out_dir)
    return fig


def stability(table: pd.DataFrame, out_dir: Path, name: str = "selection_stability") -> plt.Figure:
    """Mean Jaccard overlap of each strategy's choice on calibration subsets with its choice on all blocks."""
    ks = sorted(table["k"].unique())
    fig, axes = plt.subplots(1, len(ks), figsize=(TEXT_WIDTH, 2.4), sharey=True, squeeze=False)
    for ax, k in zip(axes[0], ks):
        rows = table[table.k == k]
        for i, (strategy, group) in enumerate(rows.groupby("strategy", sort=False)):
            group = group.sort_values("size")
            ax.plot(group["size"], group["jaccard_with_full"], marker="os^Dv<>p"[i % 8], ms=3.5, lw=1.1,
                    color=PALETTE[i % len(PALETTE)], label=strategy)
        ax.set_xscale("log", base=2)
        ax.set_title(f"k = {k}")
        ax.set_xlabel("calibration blocks")
        ax.set_ylim(0, 1.05)
    axes[0][0].set_ylabel("Jaccard with full-calibration choice")
    axes[0][-1].legend(fontsize="x-small", loc="lower right")
    save_figure(fig, name, out_dir)
    return fig


def selection_view(
    similarity: LayerSimilarity, layers: Sequence[int], title: str = "", out_dir: Path | None = None, name: str = "selection"
) -> plt.Figure:
    """The cosine-similarity heatmap with the removed layers marked on the diagonal, beside Block Influence.

    Saved only when ``out_dir`` is given (the notebook's interactive explorer only shows it).
    """
    L = similarity.num_layers
    fig, (left, right) = plt.subplots(1, 2, figsize=(TEXT_WIDTH, 2.8), gridspec_kw={"width_ratios": [1, 1.4]})
    im = draw_cosine(left, similarity)
    chosen = np.asarray(sorted(layers), dtype=int)
    left.plot(chosen, chosen, "s", ms=4, mfc="none", mec=PALETTE[3], mew=1.4, label="removed")
    left.set_xlabel("residual state $x_j$")
    left.set_ylabel("residual state $x_i$")
    left.legend(loc="upper left", fontsize="small")
    fig.colorbar(im, ax=left, label="mean cosine")
    bi = similarity.block_influence
    colors = [PALETTE[3] if i in set(chosen.tolist()) else PALETTE[0] for i in range(L)]
    draw_block_influence(right, bi, colors)
    right.set_xlabel("layer ℓ (orange: removed)")
    right.set_ylabel("Block Influence")
    if title:
        fig.suptitle(title, fontsize="medium")
    if out_dir is not None:
        save_figure(fig, name, out_dir)
    return fig


def selection_explorer(curves: pd.DataFrame, similarity: LayerSimilarity, baseline: float, default: str = "sleb"):
    """An ipywidgets explorer over cached pruning curves: choose a strategy and k, see ``selection_view``.

    Reads ``curves`` only (nothing is recomputed); in a headless run it renders its default once.
    """
    import ipywidgets as widgets

    layer_curves = curves[(curves.granularity == "layer") & (curves.k > 0)]
    strategies = list(dict.fromkeys(layer_curves.strategy))
    ks = sorted(layer_curves.k.unique())

    def show(strategy: str, k: int) -> None:
        row = layer_curves[(layer_curves.strategy == strategy) & (layer_curves.k == k)].iloc[0]
        selection_view(similarity, row.layers, f"{strategy}, k = {k}: eval PPL {row.eval_ppl:.1f} (unpruned {baseline:.1f})")
        plt.show()

    return widgets.interact(
        show,
        strategy=widgets.Dropdown(options=strategies, value=default if default in strategies else strategies[0]),
        k=widgets.SelectionSlider(options=[int(k) for k in ks], value=int(ks[-1])),
    )
