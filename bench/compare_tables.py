"""Compare the tables in ``figures/`` with those of a git revision, cell by cell.

For refactors that must not change a number: every CSV of ``figures/`` is read as it is now and as
it was at ``--rev`` (default ``HEAD``); numbers must agree to ``--rtol`` (relative, default 1e-6),
everything else exactly. Columns that time something (wall time, throughput) are reported but not
held to the tolerance, since they are measurements of the machine, not of the method.

    .venv/bin/python bench/compare_tables.py --rev d16767a
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys

import numpy as np
import pandas as pd

from frankenllama.paths import FIGURES_DIR, ROOT

TIMING = ("seconds", "time", "_s", "(s)", "/s", "tps", "_ms", "_x", "speedup", "speed-up", "peak", "memory", "throughput")


def _old(rev: str, name: str) -> pd.DataFrame | None:
    try:
        text = subprocess.run(["git", "show", f"{rev}:figures/{name}"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
    except subprocess.CalledProcessError:
        return None
    return pd.read_csv(io.StringIO(text))


def _is_timing(column: str) -> bool:
    return any(word in column.lower() for word in TIMING)


def compare(rev: str, rtol: float) -> int:
    """Print one line per table; return the number of tables whose numbers differ beyond ``rtol``."""
    failures = 0
    for path in sorted(FIGURES_DIR.glob("*.csv")):
        old, new = _old(rev, path.name), pd.read_csv(path)
        if old is None:
            print(f"new       {path.name}")
            continue
        if list(old.columns) != list(new.columns) or old.shape != new.shape:
            print(f"DIFFERENT {path.name}: shape/columns {old.shape} {list(old.columns)} -> {new.shape} {list(new.columns)}")
            failures += 1
            continue
        bad, timed = [], []
        for col in old.columns:
            a, b = old[col], new[col]
            if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
                same = np.isclose(a.astype(float), b.astype(float), rtol=rtol, atol=0, equal_nan=True)
            else:
                same = a.astype(object).fillna("").astype(str).to_numpy() == b.astype(object).fillna("").astype(str).to_numpy()
            if not same.all():
                (timed if _is_timing(col) else bad).append(f"{col} ({int((~same).sum())} cells)")
        status = "DIFFERENT" if bad else "same     "
        failures += bool(bad)
        extra = f"; timing columns differ: {', '.join(timed)}" if timed else ""
        print(f"{status} {path.name}{': ' + ', '.join(bad) if bad else ''}{extra}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD", help="git revision holding the reference tables")
    parser.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance for numbers")
    args = parser.parse_args()
    failures = compare(args.rev, args.rtol)
    print(f"{failures} table(s) differ beyond rtol {args.rtol}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
