"""Tables for the thesis: every table is written as CSV (for analysis) and LaTeX (booktabs)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from frankenllama.cache import atomic_write_text


def write_table(df: pd.DataFrame, out_dir: Path, name: str, caption: str = "", float_format: str = "%.2f") -> list[Path]:
    """Write ``df`` to ``<out_dir>/<name>.csv`` and ``<name>.tex``; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, tex = out_dir / f"{name}.csv", out_dir / f"{name}.tex"
    atomic_write_text(csv, df.to_csv(index=False))
    latex = df.to_latex(index=False, float_format=float_format.__mod__, caption=caption or None,
                        label=f"tab:{name}", escape=True)
    atomic_write_text(tex, latex)
    return [csv, tex]
