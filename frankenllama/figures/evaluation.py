"""Figures of notebook 04 (the final comparison): accuracy against size and latency, per-task retention,
and the explorer of per-task differences to the original (with intervals).

Both read the comparison table of ``frankenllama.stages.evaluation.comparison_table`` (one row per
model, the unpruned one named ``BASELINE``) and save through ``frankenllama.figures.style.save_figure``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from frankenllama.eval.tasks import TASKS
from frankenllama.figures.explorer import explorer
from frankenllama.figures.style import COLUMN_WIDTH, PALETTE, TEXT_WIDTH, save_figure, series_style
from frankenllama.stages.evaluation import BASELINE


def _pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points not dominated (smaller x and larger y are better), sorted by x."""
    order = np.argsort(x)
    front, best = [], -np.inf
    for i in order:
        if y[i] > best:
            front.append(i)
            best = y[i]
    return np.array(front, dtype=int)


def pareto_figure(table: pd.DataFrame, out_dir: Path, name: str = "pareto_accuracy") -> plt.Figure:
    """Average accuracy against parameters and against decode latency; the Pareto front joined."""
    panels = [("params_M", "parameters (M)"), ("decode_ms_b1", "decode latency, batch 1 (ms/token)")]
    fig, axes = plt.subplots(1, 2, figsize=(TEXT_WIDTH, 2.8), sharey=True)
    for ax, (col, label) in zip(axes, panels):
        data = table[[col, "average"]].dropna()
        x, y = data[col].to_numpy(float), data["average"].to_numpy(float)
        for i, (model, row) in enumerate(data.drop(index=BASELINE, errors="ignore").iterrows()):
            ax.scatter(row[col], row["average"], s=28, zorder=3, label=model, **series_style(i, "scatter"))
        if BASELINE in data.index:
            ax.scatter(data.loc[BASELINE, col], data.loc[BASELINE, "average"], color=PALETTE[-1], marker="*", s=60,
                       zorder=3, label=BASELINE)
        if len(data) > 1:
            front = _pareto_front(x, y)
            ax.plot(x[front], y[front], color="0.6", lw=1, zorder=2, ls="--")
        ax.set_xlabel(label)
    axes[0].set_ylabel("average accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(3, len(labels)), fontsize=7)
    fig.tight_layout()
    save_figure(fig, name, out_dir)
    return fig


def retention_figure(table: pd.DataFrame, out_dir: Path, name: str = "task_retention") -> plt.Figure:
    """Per-task accuracy of each variant as % of the original's (grouped bars; 100 % = no loss)."""
    tasks = list(table.columns[: table.columns.get_loc("average") + 1])  # every task, then the average
    variants = [m for m in table.index if m != BASELINE]
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH if len(tasks) > 4 else COLUMN_WIDTH, 2.8))
    if not variants:
        ax.text(0.5, 0.5, "no variants in the store yet:\nrun notebooks 02 and 03", ha="center", va="center", transform=ax.transAxes)
    width = 0.8 / max(len(variants), 1)
    for i, model in enumerate(variants):
        retained = 100 * table.loc[model, tasks] / table.loc[BASELINE, tasks]
        ax.bar(np.arange(len(tasks)) + (i - (len(variants) - 1) / 2) * width, retained, width, label=model,
               linewidth=0, **series_style(i, "bar"))
    ax.axhline(100, color="0.3", lw=0.8)
    ax.set_xticks(np.arange(len(tasks)), [TASKS[t].title if t in TASKS else t for t in tasks], rotation=30, ha="right")
    ax.set_ylabel("accuracy retained (%)")
    if variants:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, name, out_dir)
    return fig


def accuracy_differences(stage: dict, variant: str, metric: str = "acc_norm", z: float = 1.96) -> pd.DataFrame:
    """Per-task accuracy of ``variant`` minus the original's (points), with an unpaired ``z`` interval.

    The half-width is ``z·sqrt(se_v² + se_o²)`` from each task's binomial standard error: the two
    models are treated as independent samples because the evaluation stage stores no per-item
    results yet, so the interval is wider than a paired one on the same items would be. The last
    row is the mean over tasks, with the standard error of a mean of independent tasks.
    """
    ours, theirs = stage["results"][variant]["tasks"], stage["results"][BASELINE]["tasks"]
    rows = [{"task": t, "difference": 100 * (ours[t][metric] - theirs[t][metric]),
             "se": 100 * np.hypot(ours[t][f"{metric}_stderr"], theirs[t][f"{metric}_stderr"])} for t in theirs if t in ours]
    table = pd.DataFrame(rows)
    mean = {"task": "average", "difference": table.difference.mean(), "se": np.sqrt((table.se**2).sum()) / len(table)}
    table = pd.concat([table, pd.DataFrame([mean])], ignore_index=True)
    table["half_width"] = z * table.se.fillna(0.0)
    return table.set_index("task")


def _difference_view(stage: dict, variant: str, metric: str, width: float) -> plt.Figure:
    """Points with 95 % intervals: ``variant`` − original accuracy per task and on average."""
    table = accuracy_differences(stage, variant, metric)
    fig, ax = plt.subplots(figsize=(width, 0.32 * len(table) + 1.3), layout="constrained")
    y = np.arange(len(table))[::-1]
    for rows, color in ((slice(None, -1), PALETTE[0]), (slice(-1, None), PALETTE[-1])):  # tasks, then their mean in black
        ax.errorbar(table.difference[rows], y[rows], xerr=table.half_width[rows], fmt="o", color=color, ms=4, capsize=2.5, lw=1.2)
    ax.axvline(0, color="0.4", lw=0.8)
    ax.set_yticks(y, [TASKS[t].title if t in TASKS else t for t in table.index])
    ax.set_xlabel(f"{metric} difference, {variant} − original (points, 95 % unpaired interval)")
    ax.set_title(f"{variant} vs original ({metric}): average {table.difference.iloc[-1]:+.1f} ± "
                 f"{table.half_width.iloc[-1]:.1f} points", fontsize="medium")
    return fig


def difference_explorer(stage: dict, metric: str = "acc_norm", width: float = TEXT_WIDTH):
    """An explorer over the cached evaluation: a variant, then the accuracy metric; its differences to the original.

    Reads ``evaluation_stage``'s result only. With no variant in the store it shows a note instead.
    """
    import ipywidgets as widgets

    variants = [name for name in stage["results"] if name != BASELINE]
    if not variants:
        return widgets.HTML("No variants evaluated yet: run notebooks 02 and 03 first.")
    return explorer(
        {v: ["acc", "acc_norm"] for v in variants}, lambda v, m: _difference_view(stage, v, m, width),
        ("variant", "metric"), (variants[0], metric),
        caption="Accuracy of the variant minus the original's, per task and on average, in points. Intervals: 95 %, "
                "from each task's binomial standard error treating the two models as independent samples "
                "(<b>unpaired</b>: no per-item results are stored yet, so they are wider than paired intervals).")
