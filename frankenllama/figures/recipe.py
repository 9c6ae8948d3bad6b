"""Figures of notebook 05 (the recipe against the peers' pipelines): the study figure and its explorer.

Both read ``frankenllama.stages.recipe.study_table`` (one row per removal ratio × pipeline, plus the
original) and draw every number with its 95 % paired interval: perplexity as a ratio to the
original's (1 = no loss), zero-shot scores as differences to the original (0 = no loss).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from frankenllama.figures.explorer import explorer
from frankenllama.figures.style import PALETTE, TEXT_WIDTH, save_figure, series_style
from frankenllama.stages.evaluation import BASELINE
from frankenllama.stages.recipe import DOMAINS, OURS

# (column stem, axis label, reference line) of the four panels; every column is relative to the original
PANELS = (
    ("ppl_ood", "out-of-domain PPL / original", 1.0),
    ("ppl_in", "in-domain PPL / original", 1.0),
    ("bpb_orig", "gold bits/byte − original", 0.0),
    ("acc_norm_orig", "acc_norm − original (points)", 0.0),
)


def _value(table: pd.DataFrame, stem: str) -> str:
    """The column holding the point estimate of ``stem`` (ratios end in ``_x``)."""
    return f"{stem}_x" if stem.startswith("ppl") else stem


def _pipelines(table: pd.DataFrame) -> list[str]:
    return [p for p in dict.fromkeys(table.pipeline) if p != BASELINE]


def study_figure(table: pd.DataFrame, out_dir: Path, name: str = "recipe_study") -> plt.Figure:
    """Four panels over the removal ratio: perplexity ratios (both domains) and zero-shot differences, with intervals.

    Pipelines are side by side at each ratio (the FrankenLLaMA recipe in black); a panel whose
    measure was not taken at a ratio (zero-shot outside ``zero_shot_ks``) leaves it empty.
    """
    rows, pipes = table[table.pipeline != BASELINE], _pipelines(table)
    ratios = sorted(rows.percent.unique())
    fig, axes = plt.subplots(2, 2, figsize=(TEXT_WIDTH, 5.2), layout="constrained")
    width = 0.8 / max(len(pipes), 1)
    for ax, (stem, label, ref) in zip(axes.flat, PANELS):
        col, points = _value(table, stem), []
        for i, pipe in enumerate(pipes):
            style = {"color": PALETTE[-1]} if pipe == OURS else series_style(i)
            sub = rows[rows.pipeline == pipe].set_index("percent").reindex(ratios)
            if col not in sub or sub[col].isna().all():
                continue
            x = np.arange(len(ratios)) - 0.4 + width * (i + 0.5)
            err = np.vstack([sub[col] - sub[f"{stem}_low"], sub[f"{stem}_high"] - sub[col]])
            ax.errorbar(x, sub[col], yerr=err, fmt="o", ms=3.5, capsize=2, lw=1, label=pipe, **style)
            points += [(xi, yi, lo, hi, style["color"]) for xi, yi, lo, hi in
                       zip(x, sub[col], sub[f"{stem}_low"], sub[f"{stem}_high"]) if np.isfinite(yi)]
        ax.axhline(ref, color="0.5", lw=0.8, ls="--")
        if ref == 1.0:  # perplexity ratios: a failed pipeline (hundreds of times the original) must not flatten the rest
            ax.set_yscale("log")
        else:
            _clip_outliers(ax, points, ref)
        ax.set_xlim(-0.5, len(ratios) - 0.5)
        ax.set_xticks(np.arange(len(ratios)), [f"{r} %" for r in ratios])
        ax.set_xlabel("decoder parameters removed")
        ax.set_ylabel(label)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 6))
    save_figure(fig, name, out_dir)
    return fig


def _clip_outliers(ax: plt.Axes, points: list[tuple[float, float, float, float, str]], ref: float,
                   factor: float = 4.0) -> None:
    """Cut a difference axis above the rest when one interval reaches ``factor`` times further up than all others.

    ``points`` are ``(x, value, interval low, interval high, colour)``. A failed pipeline (Lu et al.
    at +2.4 gold bits per byte) would otherwise squeeze every other interval into a line; it is
    drawn as an arrow at the top edge, labelled with its value (on its left; the next of two
    neighbours one line lower on its right, so labels and arrows do not print over each other).
    When the other points span nothing (every one at the same value: nothing for the outlier to
    squeeze) the axis is left whole.
    """
    highs = sorted((hi for *_, hi, _ in points if np.isfinite(hi)), reverse=True)
    lows = [lo for _, _, lo, _, _ in points if np.isfinite(lo)]
    if len(highs) < 2 or not lows:
        return
    bottom = min(*lows, ref)
    rest = [h for h in highs if h - bottom < (highs[0] - bottom) / factor]
    if not rest or rest[0] <= bottom:
        return
    limit = rest[0] + 0.25 * (rest[0] - bottom)
    ax.set_ylim(bottom - 0.08 * (limit - bottom), limit)
    cut = sorted((x, value, color) for x, value, _, hi, color in points if hi > limit)
    step = min(np.diff(sorted({x for x, *_ in points})), default=1.0)  # the spacing of neighbouring pipelines
    row = 0
    for j, (x, value, color) in enumerate(cut):
        row = 1 - row if j and x - cut[j - 1][0] <= 1.5 * step else 0  # a neighbour's label beside it: alternate
        ax.plot([x], [limit], marker="^", ms=5, color=color, clip_on=False)
        # the first of neighbours labelled on its left, the next lower on its right: neither crosses the other's marker
        ax.annotate(f"{value:+.2f}", (x, limit), xytext=(4 if row else -4, -9 - 8 * row), textcoords="offset points",
                    ha="left" if row else "right", fontsize=6, color=color)


def _pair_view(table: pd.DataFrame, pipeline: str, percent: int, width: float) -> plt.Figure:
    """One (pipeline, ratio): perplexity ratios and zero-shot differences vs the original and vs the recipe."""
    row = table[(table.pipeline == pipeline) & (table.percent == percent)].iloc[0]
    groups = [
        ("perplexity ratio (1 = equal)", 1.0, [(f"ppl_{d}", f"{d} / original") for d in DOMAINS]
         + [(f"ppl_{d}_vs_ours", f"{d} / recipe") for d in DOMAINS]),
        ("gold bits per byte, difference", 0.0, [("bpb_orig", "− original"), ("bpb_ours", "− recipe")]),
        ("acc_norm, difference (points)", 0.0, [("acc_norm_orig", "− original"), ("acc_norm_ours", "− recipe")]),
    ]
    fig, axes = plt.subplots(len(groups), 1, figsize=(width, 5.0), layout="constrained")
    for ax, (label, ref, items) in zip(axes, groups):
        shown = [(stem, text) for stem, text in items
                 if _value(table, stem) in row.index and pd.notna(row[_value(table, stem)])]
        ax.axvline(ref, color="0.5", lw=0.8, ls="--")
        ax.set_xlabel(label)
        if not shown:
            ax.set_yticks([])
            ax.text(0.5, 0.5, "not measured for this pipeline at this ratio", transform=ax.transAxes, ha="center",
                    va="center", color="0.4")
            continue
        y = np.arange(len(shown))[::-1]
        for yi, (stem, _) in zip(y, shown):
            v = row[_value(table, stem)]
            lo, hi = row[f"{stem}_low"], row[f"{stem}_high"]
            excludes = lo > ref or hi < ref
            ax.errorbar([v], [yi], xerr=[[v - lo], [hi - v]], fmt="o", ms=4, capsize=2.5, lw=1.2,
                        color=PALETTE[3] if excludes else PALETTE[0])
        ax.set_yticks(y, [text for _, text in shown])
    fig.suptitle(f"{pipeline} at {percent} % removed (red: 95 % interval excludes no difference)", fontsize="medium")
    return fig


def recipe_explorer(table: pd.DataFrame, width: float = TEXT_WIDTH):
    """An explorer over the study table: a pipeline, then a removal ratio; its paired differences with intervals."""
    rows = table[table.pipeline != BASELINE]
    choices = {p: sorted(int(r) for r in rows[rows.pipeline == p].percent) for p in _pipelines(table)}
    ratios = sorted(rows.percent.unique())
    default = (OURS if OURS in choices else next(iter(choices)), int(ratios[len(ratios) // 2]))
    return explorer(
        choices, lambda p, r: _pair_view(table, p, r, width), ("pipeline", "% removed"), default,
        caption="Perplexity (in-domain: wiki-leads eval; out-of-domain: olmo-passages) as a ratio to the original's "
                "and to the FrankenLLaMA recipe's at the same ratio; zero-shot gold bits per byte and acc_norm as "
                "differences. Intervals: 95 % paired bootstrap (eval blocks; items within tasks).",
    )
