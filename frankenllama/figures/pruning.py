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
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from frankenllama.figures.explorer import explorer
from frankenllama.figures.similarity import draw_block_influence, draw_cosine
from frankenllama.figures.style import COLUMN_WIDTH, PALETTE, TEXT_WIDTH, save_figure
from frankenllama.similarity import LayerSimilarity
from frankenllama.units import ATTN, MLP, removal_mask


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
    similarity: LayerSimilarity,
    layers: Sequence[int],
    title: str = "",
    out_dir: Path | None = None,
    name: str = "selection",
    attention: Sequence[int] = (),
    mlp: Sequence[int] = (),
    width: float = TEXT_WIDTH,
) -> plt.Figure:
    """The cosine-similarity heatmap with the removed units marked on the diagonal, beside Block Influence.

    ``layers`` are whole blocks removed; ``attention`` / ``mlp`` the blocks of which only the attention
    or only the MLP sub-block is removed (sub-layer strategies, BlockPruner-style, Zhong et al. 2024),
    each marked with its own symbol and bar colour. Drawn with constrained layout at ``width`` inches
    and the legend below both panels, so no label overlaps another or the heatmap. Saved only when
    ``out_dir`` is given (the notebook's interactive explorer only shows it).
    """
    L = similarity.num_layers
    fig, (left, right) = plt.subplots(1, 2, figsize=(width, 3.2), layout="constrained",
                                      gridspec_kw={"width_ratios": [1, 1.4]})
    im = draw_cosine(left, similarity)
    marks = [(sorted(layers), "s", PALETTE[3], "", "whole block removed"),
             (sorted(attention), "^", PALETTE[1], "///", "attention removed"),
             (sorted(mlp), "v", PALETTE[4], "...", "MLP removed")]
    colors, hatches = [PALETTE[0]] * L, [""] * L
    handles = [Patch(facecolor=PALETTE[0], label="kept")]
    for chosen, marker, color, hatch, label in marks:
        if not chosen:
            continue
        left.plot(chosen, chosen, marker, ls="none", ms=4, mfc="none", mec=color, mew=1.4)
        for i in chosen:
            colors[i], hatches[i] = color, hatch
        handles.append(Line2D([], [], marker=marker, ls="none", mfc=color, mec=color, label=label))
    left.set_xlabel("residual state $x_j$")
    left.set_ylabel("residual state $x_i$")
    fig.colorbar(im, ax=left, label="mean cosine", shrink=0.9)
    draw_block_influence(right, similarity.block_influence, colors)
    for bar, hatch in zip(right.patches, hatches):
        bar.set_hatch(hatch)
        bar.set_edgecolor("white" if hatch else bar.get_facecolor())
    right.set_xlabel("layer ℓ")
    right.set_ylabel("Block Influence")
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize="small")
    if title:
        fig.suptitle(title, fontsize="medium")
    if out_dir is not None:
        save_figure(fig, name, out_dir)
    return fig


def _view_of(row: pd.Series, similarity: LayerSimilarity, baseline: float, width: float) -> plt.Figure:
    """``selection_view`` of one pruning-curve row (whole blocks, or attention and MLP sub-blocks apart)."""
    mask = removal_mask(row.units, similarity.num_layers, row.granularity)  # (L, 2): attention, MLP removed
    whole, attn, mlp = mask.all(axis=1), mask[:, ATTN] & ~mask[:, MLP], mask[:, MLP] & ~mask[:, ATTN]
    title = f"{row.strategy}, k = {row.k}: eval PPL {row.eval_ppl:.1f} (unpruned {baseline:.1f})"
    return selection_view(similarity, np.flatnonzero(whole).tolist(), title, attention=np.flatnonzero(attn).tolist(),
                          mlp=np.flatnonzero(mlp).tolist(), width=width)


def selection_explorer(
    curves: pd.DataFrame, similarity: LayerSimilarity, baseline: float, best: pd.DataFrame, k: int, width: float = TEXT_WIDTH
):
    """An explorer over the cached pruning curves: a strategy, then one of the k's it has results at.

    Every strategy of ``curves`` is offered, sub-layer ones included (their attention and MLP
    sub-blocks marked apart); the k buttons follow the strategy, so only computed pairs are shown.
    Opens on ``best``'s strategy (``best_strategies(curves, granularity=None)``) at ``k`` (or the
    nearest k it has). Reads ``curves`` only: nothing is recomputed.
    """
    points = curves[curves.k > 0]
    choices = {s: sorted(int(k) for k in rows.k) for s, rows in points.groupby("strategy", sort=False)}
    rows = best[best.k == k] if (best.k == k).any() else best.iloc[(best.k - k).abs().argsort()[:1]]
    default = (str(rows.strategy.iloc[0]), int(rows.k.iloc[0])) if len(rows) else (next(iter(choices)), k)
    by_pair = {(r["strategy"], int(r["k"])): pd.Series(r) for r in points.to_dict("records")}
    return explorer(
        choices, lambda s, kk: _view_of(by_pair[s, kk], similarity, baseline, width),
        ("strategy", "k"), default,
        caption="Removed units of each strategy at each k it was run at (searches run at fewer k's); "
                "eval perplexity from the cached pruning curves.")
