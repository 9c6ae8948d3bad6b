"""Reliability check: how often does a headless papermill run stall on a finished cell, by engine?

Runs one notebook (default: 06_deployment on the smoke profile, whose explorer cell stalled papermill's
own client during a test run) ``--runs`` times with each engine, alternating, every run with a cell
timeout of ``--cell-timeout`` seconds, and counts the runs that ended in a cell timeout (a stall: no
smoke cell takes that long once the smoke caches exist) and those that failed otherwise. Not a speed
check; run it on an otherwise idle machine after one smoke run has filled the caches.

    python bench/papermill_stall.py --runs 30
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parents[1]

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--notebook", default="06_deployment")
p.add_argument("--runs", type=int, default=30, help="runs per engine")
p.add_argument("--cell-timeout", type=int, default=60)
p.add_argument("--engines", nargs="+", default=["nbclient", "frankenllama"])
a = p.parse_args()

with tempfile.TemporaryDirectory() as tmp:
    source = Path(tmp) / f"{a.notebook}.ipynb"
    jupytext.write(jupytext.read(ROOT / "notebooks" / f"{a.notebook}.py"), source)
    counts = {e: {"ok": 0, "stalled": 0, "failed": 0, "seconds": 0.0} for e in a.engines}
    for run in range(a.runs):
        for engine in a.engines:
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "papermill", "--engine", engine, "--kernel", "frankenllama", "--cwd",
                 str(ROOT / "notebooks"), "-p", "profile", "smoke", "--no-progress-bar", "--execution-timeout",
                 str(a.cell_timeout), str(source), str(Path(tmp) / "out.ipynb")],
                capture_output=True, text=True)  # fmt: skip
            stalled = "CellTimeoutError" in done.stderr + done.stdout
            outcome = "ok" if done.returncode == 0 else "stalled" if stalled else "failed"
            counts[engine][outcome] += 1
            counts[engine]["seconds"] += time.perf_counter() - started
            if outcome != "ok":
                print(f"run {run + 1}, {engine}: {outcome}", flush=True)
    for engine, c in counts.items():
        n = c["ok"] + c["stalled"] + c["failed"]
        print(f"{engine:13s} {n} runs: {c['ok']} ok, {c['stalled']} stalled, {c['failed']} failed; "
              f"{c['seconds'] / n:.1f} s a run")
