"""Notebook 06's figure: quality against bytes, one curve per quantization, the Pareto front marked."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from frankenllama.figures.style import COLUMN_WIDTH, save_figure, series_style  # frankenllama.figures.style after the refactor


def pareto_front(rows: Iterable[dict[str, Any]], size: str = "file_bytes", quality: str = "ppl") -> list[dict[str, Any]]:
    """Rows no other row beats on both size and quality (lower is better for both), by size ascending."""
    front, best = [], float("inf")
    for row in sorted(rows, key=lambda r: (float(r[size]), float(r[quality]))):
        if float(row[quality]) < best:
            front.append(row)
            best = float(row[quality])
    return front


def plot_quality_vs_bytes(
    rows: list[dict[str, Any]], out_dir: Path, name: str = "deployment_quality_vs_bytes", quality: str = "ppl",
) -> plt.Figure:
    """Held-out perplexity (log) against GGUF file size (MB), a line per qtype through k = 0, 3, 6, …;
    healed variants as open markers; the Pareto front over every point as a dashed black step line."""
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.6))
    qtypes = list(dict.fromkeys(r["qtype"] for r in rows))
    for i, qtype in enumerate(qtypes):
        style = series_style(i, "scatter")
        plain = sorted((r for r in rows if r["qtype"] == qtype and not _healed(r)), key=lambda r: r["k"])
        ax.plot([r["file_bytes"] / 1e6 for r in plain], [r[quality] for r in plain], marker=style["marker"],
                color=style["color"], label=qtype, ms=4)
        for r in plain:
            ax.annotate(f"{r['k']}", (r["file_bytes"] / 1e6, r[quality]), textcoords="offset points",
                        xytext=(3, 3), fontsize=6, color=style["color"])
        for r in (r for r in rows if r["qtype"] == qtype and _healed(r)):
            ax.plot(r["file_bytes"] / 1e6, r[quality], marker=style["marker"], mfc="none", color=style["color"], ms=6)
    front = pareto_front(rows, quality=quality)
    ax.step([r["file_bytes"] / 1e6 for r in front], [r[quality] for r in front], where="post", color="black",
            ls="--", lw=0.8, label="Pareto front")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("GGUF file size (MB)")
    ax.set_ylabel("held-out perplexity (llama.cpp)")
    ax.legend(title="numbers: blocks removed; open: healed", title_fontsize=6, fontsize=7)
    save_figure(fig, name, out_dir)
    return fig


def _healed(row: dict[str, Any]) -> bool:
    return str(row.get("healed")).lower() == "true"
