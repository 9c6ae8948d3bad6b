"""Figures of notebook 04 (the final comparison): accuracy and perplexity (in and out of domain) against
size and latency with paired intervals, per-task retention, and the explorer of per-task paired
differences to the original (with intervals).

The figures read the comparison table of ``frankenllama.stages.evaluation.comparison_table`` (one row per
model, the unpruned one named ``BASELINE``) and save through ``frankenllama.figures.style.save_figure``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.transforms import ScaledTranslation

from frankenllama.eval.tasks import TASKS
from frankenllama.figures.explorer import explorer
from frankenllama.figures.style import COLUMN_WIDTH, PALETTE, TEXT_WIDTH, save_figure, series_style
from frankenllama.stages.evaluation import BASELINE, HIGHER_IS_BETTER, UNITS, task_differences


def _pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points not dominated (smaller x and larger y are better), sorted by x."""
    order = np.argsort(x)
    front, best = [], -np.inf
    for i in order:
        if y[i] > best:
            front.append(i)
            best = y[i]
    return np.array(front, dtype=int)


def _points(ax: plt.Axes, x: pd.Series, y: pd.Series, yerr: pd.DataFrame | None) -> None:
    """Every model as a point (the original as a black star), with ``yerr`` rows ``(below, above)`` as error bars.

    Variants of one size (pruned and healed alike) are drawn 4 points apart sideways (a display offset,
    not a change of their x value), so their error bars do not hide one another."""
    variants = [m for m in y.index if m != BASELINE]
    for i, model in enumerate(variants):
        err = None if yerr is None or model not in yerr.index else yerr.loc[[model]].to_numpy().T  # (2, 1)
        style = series_style(i, "scatter")
        shift = ScaledTranslation(4 / 72 * (i - (len(variants) - 1) / 2), 0, ax.figure.dpi_scale_trans)
        low, high = (0.0, 0.0) if err is None else (float(err[0, 0]), float(err[1, 0]))
        ax.update_datalim([(x[model], y[model] - low), (x[model], y[model] + high)])  # the shifted artist does not
        ax.errorbar(x[model], y[model], yerr=err, transform=ax.transData + shift, fmt=style.pop("marker"), ms=5, capsize=2, lw=1, zorder=3, label=model,
                    **style)  # fmt: skip
    if BASELINE in y.index:
        ax.scatter(x[BASELINE], y[BASELINE], color=PALETTE[-1], marker="*", s=60, zorder=4, label=BASELINE)
    ax.margins(x=0.1)  # room for the sideways offsets: at the default 5 % the outermost marker met the axis
    ax.autoscale_view()


def _ppl_errors(ppl: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame]:
    """Perplexity of each model and its 95 % interval (the paired ratio interval × the original's), as error bars."""
    base = ppl.loc[BASELINE, "ppl"]
    return ppl["ppl"], pd.DataFrame({"below": ppl["ppl"] - base * ppl["ratio_low"],
                                     "above": base * ppl["ratio_high"] - ppl["ppl"]})  # fmt: skip


def pareto_figure(table: pd.DataFrame, out_dir: Path, name: str = "pareto_accuracy", paired: pd.DataFrame | None = None,
                  ppl: dict[str, pd.DataFrame] | None = None, metric: str = "acc_norm") -> plt.Figure:  # fmt: skip
    """Average accuracy against parameters and against decode latency (the Pareto front joined), and
    perplexity in and out of domain against parameters.

    ``paired``: ``paired_table(stage, metric)``: error bars = the 95 % paired interval of each
    variant's difference to the original, drawn around its average. ``ppl``: ``{"in": …, "out": …}``
    of ``paired_perplexity_table``: a panel per domain with the paired ratio interval.
    """
    panels = [("params_M", "parameters (M)"), ("decode_ms_b1", "decode latency, batch 1 (ms/token)")]
    ppl = {d: t for d, t in (ppl or {}).items() if t is not None}
    fig, axes = plt.subplots(1 + bool(ppl), 2, figsize=(TEXT_WIDTH, 2.8 * (1 + bool(ppl))), squeeze=False)
    yerr = None if paired is None else pd.DataFrame({"below": paired["diff"] - paired["low"],
                                                       "above": paired["high"] - paired["diff"]})  # fmt: skip
    for ax, (col, label) in zip(axes[0], panels):
        data = table[[col, "average"]].dropna()
        _points(ax, data[col], data["average"], yerr)
        if len(data) > 1:
            x, y = data[col].to_numpy(float), data["average"].to_numpy(float)
            front = _pareto_front(x, y)
            ax.plot(x[front], y[front], color="0.6", lw=1, zorder=2, ls="--")
        ax.set_xlabel(label)
        ax.set_ylabel(f"average {metric} (%)")
    for ax, (domain, frame) in zip(axes[1] if ppl else [], ppl.items()):
        y, err = _ppl_errors(frame)
        _points(ax, table.loc[y.index, "params_M"], y, err)
        ax.set_xlabel("parameters (M)")
        ax.set_ylabel(f"perplexity, {'in-domain' if domain == 'in' else 'out-of-domain'}")
    for ax in axes[1][len(ppl):] if ppl else []:
        ax.set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
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


def _difference_view(stage: dict, variant: str, metric: str, width: float) -> plt.Figure:
    """Points with 95 % paired intervals: ``variant`` − original per task and on (macro) average."""
    table = task_differences(stage, variant, metric)
    fig, ax = plt.subplots(figsize=(width, 0.32 * len(table) + 1.3), layout="constrained")
    y = np.arange(len(table))[::-1]
    err = np.vstack([table["diff"] - table["low"], table["high"] - table["diff"]])  # (2, rows)
    for rows, color in ((slice(None, -1), PALETTE[0]), (slice(-1, None), PALETTE[-1])):  # tasks, then their mean in black
        ax.errorbar(table["diff"][rows], y[rows], xerr=err[:, rows], fmt="o", color=color, ms=4, capsize=2.5, lw=1.2)
    ax.axvline(0, color="0.4", lw=0.8)
    ax.set_yticks(y, [TASKS[t].title if t in TASKS else t for t in table.index])
    unit = UNITS[metric]
    ax.set_xlabel(f"{metric}, {variant} − original ({unit}; 95 % paired interval; "
                  f"{'higher' if HIGHER_IS_BETTER[metric] else 'lower'} is better)")  # fmt: skip
    avg = table.iloc[-1]
    verdict = "interval excludes 0" if avg["significant"] else "interval includes 0"
    ax.set_title(f"{variant} vs original ({metric}): average {avg['diff']:+.3g} [{avg['low']:+.3g}, {avg['high']:+.3g}] "
                 f"{unit}, {verdict}", fontsize="medium")  # fmt: skip
    return fig


EXPLORER_METRICS = ("gold_bpb", "gold_prob_norm", "acc_norm")


def difference_explorer(stage: dict, metric: str = "gold_bpb", width: float = TEXT_WIDTH):
    """An explorer over the cached evaluation: a variant, then a metric; its paired differences to the original per task.

    Reads ``evaluation_stage``'s per-item results only (``task_differences``: the same items for
    both models, 95 % paired bootstrap intervals). With no variant in the store it shows a note instead.
    """
    import ipywidgets as widgets

    variants = [name for name in stage["results"] if name != BASELINE]
    if not variants:
        return widgets.HTML("No variants evaluated yet: run notebooks 02 and 03 first.")
    return explorer(
        {v: list(EXPLORER_METRICS) for v in variants}, lambda v, m: _difference_view(stage, v, m, width),
        ("variant", "metric"), (variants[0], metric),
        caption="The variant minus the original, per task and on average over tasks (black), on the <b>same items</b>: "
                "bits per byte of the gold answer (gold_bpb, lower is better), the gold choice's probability normalised "
                "over the choices (gold_prob_norm, points) and length-normalised accuracy (acc_norm, points). Intervals: "
                "95 % paired bootstrap over items; a difference is real only where its interval excludes 0.")
