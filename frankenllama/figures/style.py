"""One figure style and one way to save figures (PDF for the thesis, PNG for a quick look).

Every figure module of ``frankenllama.figures`` draws with these sizes and colours and saves through
``save_figure``, the only place that calls ``savefig``.

Colours come from the Okabe–Ito palette, which stays distinguishable under the common forms of
colour blindness; sizes target a single column (3.4 in) or the full text width (7 in).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from frankenllama.cache import atomic_file

PALETTE: list[str] = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
COLUMN_WIDTH = 3.4  # inches
TEXT_WIDTH = 7.0  # inches
SEQUENTIAL_CMAP = "viridis"
HATCHES = ("", "///", "...", "xxx")
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")


def series_style(i: int, kind: str = "line") -> dict[str, str]:
    """Matplotlib style of the i-th series: the colours of ``PALETTE`` but black (kept for references),
    then, past seven series, the same colours again with another hatch (bars) or marker (scatter)."""
    colors = PALETTE[:-1]
    cycle = i // len(colors)
    style = {"color": colors[i % len(colors)]}
    if kind == "bar":
        style |= {"hatch": HATCHES[cycle % len(HATCHES)], "edgecolor": "white"}
    elif kind == "scatter":
        style["marker"] = MARKERS[cycle % len(MARKERS)]
    return style


def set_style() -> None:
    """Apply the workbook's plotting style (call at the top of a notebook)."""
    sns.set_theme(context="paper", style="ticks", palette=PALETTE, font_scale=1.0)
    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.dpi": 300,
            "savefig.bbox": "tight",
            "pdf.fonttype": 42,  # embed TrueType so text stays editable in the PDF
            "axes.spines.top": False,
            "axes.spines.right": False,
            "legend.frameon": False,
        }
    )


def save_figure(fig: plt.Figure, name: str, out_dir: Path) -> list[Path]:
    """Write ``fig`` as ``<out_dir>/<name>.pdf`` and ``.png``; return both paths."""
    if not name or "/" in name or name.endswith((".pdf", ".png")):
        raise ValueError(f"figure name {name!r} must be a bare stem such as 'bi_per_layer'")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.pdf", out_dir / f"{name}.png"]
    for path in paths:  # a temporary file renamed into place: a killed run never leaves half a figure
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:], metadata={"CreationDate": None} if path.suffix == ".pdf" else None)
    return paths
