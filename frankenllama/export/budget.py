"""A device budget: the best (removal, quantization) combination that fits in a given memory.

A model running in llama.cpp holds its weights (the GGUF file, memory-mapped and fully touched while
generating) and a KV cache of ``2 · n_attention_layers · n_kv_heads · head_dim · context ·
bytes_per_value`` bytes (K and V for every position of every layer that has attention; llama.cpp's
default cache type is F16, 2 bytes). ``best_under_memory`` adds the two for every row of the
deployment stage's measured table (``frankenllama.stages.deployment``) and returns the row of lowest
held-out perplexity among those that fit. Compute buffers (a few MB, mostly the logits of one
micro-batch) are not counted; the table's ``model_rss_bytes`` shows what a real run adds.

``python -m frankenllama budget --memory 64MB --context 2048 [--table deployment.csv]`` prints it.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from frankenllama.paths import FIGURES_DIR

DEFAULT_TABLE = FIGURES_DIR / "deployment.csv"  # notebook 06's table
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(text: str) -> int:
    """``"64MB"`` → 64·10⁶, ``"1.5GiB"`` → 1.5·2³⁰, ``"1000"`` → 1000 (SI and binary units)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read {text!r} as a memory size: write e.g. 64MB, 512MiB, 2GB or a byte count")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def kv_cache_bytes(row: dict[str, Any], context: int, bytes_per_value: float = 2) -> int:
    """K and V cache bytes of ``row``'s model at ``context`` positions (F16 cache: 2 bytes a value)."""
    return int(2 * int(row["kv_layers"]) * int(row["n_kv_heads"]) * int(row["head_dim"]) * context * bytes_per_value)


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """The deployment table from a CSV (numbers parsed back from text)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no deployment table at {path}: run notebook 06 (or pass --table CSV)")
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key, value in row.items():
            try:
                row[key] = float(value) if any(c in value for c in ".eE") else int(value)
            except (TypeError, ValueError):
                pass
    return rows


def best_under_memory(
    table: Iterable[dict[str, Any]], memory_bytes: int, context: int, bytes_per_value: float = 2,
    quality: str = "ppl",
) -> dict[str, Any]:
    """The row of lowest ``quality`` (perplexity) whose weights plus KV cache fit in ``memory_bytes``.

    Ties go to the smaller footprint. The returned row gains ``kv_cache_bytes`` and
    ``footprint_bytes``. Raises ``ValueError`` naming the smallest footprint when nothing fits.
    """
    if context < 1 or memory_bytes < 1:
        raise ValueError(f"need a positive memory and context, got {memory_bytes} bytes, context {context}")
    rows = with_footprint(table, context, bytes_per_value)
    if not rows:
        raise ValueError("the deployment table is empty")
    fits = [r for r in rows if r["footprint_bytes"] <= memory_bytes]
    if not fits:
        small = min(rows, key=lambda r: r["footprint_bytes"])
        raise ValueError(
            f"nothing fits in {memory_bytes / 1e6:.1f} MB at context {context}: the smallest, {describe(small)}, "
            f"needs {small['footprint_bytes'] / 1e6:.1f} MB; raise --memory or lower --context"
        )
    return min(fits, key=lambda r: (float(r[quality]), r["footprint_bytes"]))


def with_footprint(table: Iterable[dict[str, Any]], context: int, bytes_per_value: float = 2) -> list[dict[str, Any]]:
    """Each row with ``kv_cache_bytes`` (at ``context``) and ``footprint_bytes`` = file + KV cache added."""
    rows = []
    for row in table:
        kv = kv_cache_bytes(row, context, bytes_per_value)
        rows.append({**row, "kv_cache_bytes": kv, "footprint_bytes": int(row["file_bytes"]) + kv})
    return rows


def budget_summary(
    table: Iterable[dict[str, Any]], context: int, quality: str = "ppl", n_boot: int = 2000,
) -> list[str]:
    """Which combination wins at every memory budget, as sentences (Markdown bullets).

    The winners are the Pareto front of (footprint at ``context``, ``quality``): each wins from its
    footprint up to the next one's. Each winner is compared with the winner just below it on the same
    held-out blocks (``nll_blocks``, or ``nll_blocks_ood`` for ``ppl_ood``): the mean difference of
    per-block NLL with a 95 % paired-bootstrap interval (``frankenllama.eval.paired``); "better" only
    when the interval excludes 0.
    """
    from frankenllama.eval.paired import paired_difference
    from frankenllama.figures.deployment import pareto_front

    nll = "nll_blocks_ood" if quality.endswith("_ood") else "nll_blocks"
    front = pareto_front(with_footprint(table, context), size="footprint_bytes", quality=quality)
    lines, previous = [], None
    for i, row in enumerate(front):
        upto = f"below {front[i + 1]['footprint_bytes'] / 1e6:.1f} MB" if i + 1 < len(front) else "and above"
        line = (f"* from {row['footprint_bytes'] / 1e6:.1f} MB {upto}: **{describe(row)}**, perplexity "
                f"{float(row[quality]):.2f} (weights {int(row['file_bytes']) / 1e6:.1f} MB + KV cache "
                f"{row['kv_cache_bytes'] / 1e6:.1f} MB)")
        if previous is not None and nll in row and nll in previous:
            d = paired_difference(row[nll], previous[nll], n_boot=n_boot)
            verdict = "better" if d.significant else "not distinguishable on these blocks"
            line += (f"; vs {describe(previous)}: Δ NLL {d.diff:+.3f} nats/token [{d.low:+.3f}, {d.high:+.3f}] "
                     f"over {d.n} blocks, {verdict}")
        lines.append(line)
        previous = row
    return lines


def describe(row: dict[str, Any]) -> str:
    """``"k=6 healed q4_0"``: which combination a row is."""
    return f"{row['variant']} {row['qtype']}"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``budget`` verb."""
    from frankenllama.cli import HelpFormatter

    parser = sub.add_parser(
        "budget", help="best (removal, quantization) under a memory budget",
        description="From the deployment table (notebook 06), the combination of lowest perplexity whose "
                    "GGUF weights plus F16 KV cache fit in MEMORY at CONTEXT tokens.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--memory", required=True, help="memory budget, e.g. 64MB, 512MiB, 2GB")
    parser.add_argument("--context", type=int, default=2048, help="context length the KV cache must hold")
    parser.add_argument("--table", default=str(DEFAULT_TABLE), help="deployment table CSV")
    parser.add_argument("--kv-bytes", type=float, default=2, help="bytes per cached value (2 = F16 cache)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from frankenllama.cli import UsageError

    try:
        best = best_under_memory(read_table(args.table), parse_bytes(args.memory), args.context, args.kv_bytes)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from err
    print(f"{describe(best)}: perplexity {float(best['ppl']):.2f}, top-1 agreement {100 * float(best['top1']):.1f} %, "
          f"weights {int(best['file_bytes']) / 1e6:.1f} MB + KV cache {best['kv_cache_bytes'] / 1e6:.1f} MB "
          f"= {best['footprint_bytes'] / 1e6:.1f} MB, decode {float(best['decode_tok_s']):.0f} tok/s")
    return 0
