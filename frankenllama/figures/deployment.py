"""Notebook 06's figure and explorer: quality against bytes, one curve per quantization, the Pareto front marked."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

from frankenllama.figures.explorer import explorer
from frankenllama.figures.style import COLUMN_WIDTH, TEXT_WIDTH, save_figure, series_style

QUALITY_LABELS = {"ppl": "in-domain perplexity", "ppl_ood": "out-of-domain perplexity"}
# plain numbers on the log axes: every decade, and its 2, 3 and 5 multiples
_MAJOR = FuncFormatter(lambda v, _: f"{v:g}")
_MINOR = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:e}"[0] in "235" else "")


def pareto_front(
    rows: Iterable[dict[str, Any]], size: str = "file_bytes", quality: str = "ppl",
) -> list[dict[str, Any]]:
    """Rows no other row beats on both size and quality (lower is better for both), by size ascending."""
    front, best = [], float("inf")
    for row in sorted(rows, key=lambda r: (float(r[size]), float(r[quality]))):
        if float(row[quality]) < best:
            front.append(row)
            best = float(row[quality])
    return front


def _healed(row: dict[str, Any]) -> bool:
    return str(row.get("healed")).lower() == "true"


def _draw(ax: plt.Axes, rows: list[dict[str, Any]], quality: str, highlight: dict[str, Any] | None = None,
          faded: bool = False) -> None:
    """One panel: ``quality`` (log) against file MB (log); a solid line per qtype through k = 0, 3, 6, …,
    a dashed one through its healed variants (open markers), the Pareto front as a black step line;
    ``highlight``: one row ringed; ``faded``: every other point lighter (the explorer's view)."""
    alpha = 0.35 if faded else 1.0
    for i, qtype in enumerate(dict.fromkeys(r["qtype"] for r in rows)):
        style = series_style(i, "scatter")
        for healed, ls, mfc in ((False, "-", style["color"]), (True, "--", "none")):
            points = sorted((r for r in rows if r["qtype"] == qtype and _healed(r) == healed), key=lambda r: r["k"])
            if not points:
                continue
            ax.plot([r["file_bytes"] / 1e6 for r in points], [r[quality] for r in points], ls=ls,
                    marker=style["marker"], color=style["color"], mfc=mfc, ms=4, alpha=alpha,
                    label=None if healed else qtype)
            for r in points:
                ax.annotate(f"{r['k']}", (r["file_bytes"] / 1e6, r[quality]), textcoords="offset points",
                            xytext=(3, -8 if healed else 3), fontsize=6, color=style["color"], alpha=alpha)
    front = pareto_front(rows, quality=quality)
    ax.step([r["file_bytes"] / 1e6 for r in front], [r[quality] for r in front], where="post", color="black",
            ls=":", lw=0.9, label="Pareto front")
    if highlight is not None:
        ax.plot(highlight["file_bytes"] / 1e6, highlight[quality], marker="o", ms=11, mfc="none", mec="black", mew=1.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(_MAJOR)
        axis.set_minor_formatter(_MINOR)
    ax.set_xlabel("GGUF file size (MB)")
    ax.set_ylabel(f"{QUALITY_LABELS.get(quality, quality)} (llama.cpp)")


def _qualities(rows: list[dict[str, Any]]) -> list[str]:
    return [q for q in QUALITY_LABELS if all(q in r for r in rows)]


def plot_quality_vs_bytes(
    rows: list[dict[str, Any]], out_dir: Path, name: str = "deployment_quality_vs_bytes",
) -> plt.Figure:
    """Held-out perplexity against GGUF file size, one panel per domain measured (in-domain ``ppl``,
    out-of-domain ``ppl_ood``): solid lines unhealed, dashed healed, numbers = blocks removed."""
    qualities = _qualities(rows)
    fig, axes = plt.subplots(1, len(qualities), figsize=(COLUMN_WIDTH * len(qualities), 2.6), squeeze=False,
                             layout="constrained")
    for ax, quality in zip(axes[0], qualities):
        _draw(ax, rows, quality)
    handles, labels = axes[0][0].get_legend_handles_labels()  # below the panels: inside, it covered the f16 points
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=7, frameon=False,
               title="numbers: blocks removed; dashed, open: healed", title_fontsize=6)
    save_figure(fig, name, out_dir)
    return fig


def describe_row(row: dict[str, Any]) -> str:
    """The configuration and measurements of one row, a line each (the explorer's side panel)."""
    blocks = row.get("removed_blocks") or []
    removed = (blocks if isinstance(blocks, str) else " ".join(str(b) for b in blocks)) or "none"
    lines = [f"{row['variant']}, {row['qtype']} ({row.get('arch', 'llama')})",
             f"strategy: {row.get('strategy', '?')}", f"removed blocks: {removed}",
             f"file: {row['file_bytes'] / 1e6:.1f} MB"]
    if "peak_rss_bytes" in row:
        lines.append(f"peak RSS: {row['peak_rss_bytes'] / 1e6:.1f} MB")
    for quality in _qualities([row]):
        lines.append(f"{QUALITY_LABELS[quality]}: {row[quality]:.2f}")
    if "kl" in row:
        lines.append(f"KL {row['kl']:.3f} nats, top-1 {100 * row['top1']:.1f} %")
    if "decode_tok_s" in row:
        lines.append(f"prefill {row['prefill_tok_s']:.0f}, decode {row['decode_tok_s']:.0f} tok/s")
    return "\n".join(lines)


def _view(rows: list[dict[str, Any]], variant: str, qtype: str, width: float) -> plt.Figure:
    """The explorer's figure: every panel with the chosen row ringed, its configuration beside them."""
    row = next(r for r in rows if r["variant"] == variant and r["qtype"] == qtype)
    qualities = _qualities(rows)
    fig, axes = plt.subplots(1, len(qualities) + 1, figsize=(width, 2.9), layout="constrained",
                             gridspec_kw={"width_ratios": [1] * len(qualities) + [0.8]})
    for ax, quality in zip(axes[:-1], qualities):
        _draw(ax, rows, quality, highlight=row, faded=True)
    axes[0].legend(fontsize=6, loc="upper right")
    axes[-1].axis("off")
    axes[-1].text(0, 1, describe_row(row), va="top", ha="left", fontsize=7, family="monospace", wrap=True)
    return fig


def deployment_explorer(rows: list[dict[str, Any]], width: float = TEXT_WIDTH):
    """An explorer over the deployment stage's cached rows: a model (removal, healed?), then its quantization.

    The chosen combination is ringed on the quality-vs-bytes panels (in and out of domain) and its
    configuration and measurements are listed beside them; opens on the in-domain Pareto point of
    largest removal. Reads the stage's rows; nothing is recomputed.
    """
    choices: dict[str, list[str]] = {}
    for r in rows:
        choices.setdefault(r["variant"], []).append(r["qtype"])
    first = max(pareto_front(rows), key=lambda r: (r["k"], -r["file_bytes"]))
    return explorer(
        choices, lambda variant, qtype: _view(rows, variant, qtype, width), ("model", "type"),
        (first["variant"], first["qtype"]),
        caption="Held-out perplexity in llama.cpp against GGUF file size; in-domain: the wiki-leads eval split, "
                "out-of-domain: olmo-passages. The dotted line is the Pareto front; the ring is the chosen model.")
