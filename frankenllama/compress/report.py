"""``report.json`` and ``report.md`` of a ``compress`` run: what was removed, what it cost, what it gained.

Every comparison with the original is paired — the same held-out blocks, the same zero-shot items —
with a 95 % paired bootstrap interval (``frankenllama.eval.paired``):

* perplexity, per domain (in-domain: the ``eval`` split of the healing corpus; out-of-domain: the
  ``eval`` split of an eval-only corpus): the per-block mean NLL difference, compressed − original,
  resampled over blocks. Every block has the same number of predictions, so ``exp`` of the mean
  difference is exactly the perplexity ratio, and ``exp`` of its interval ends is the ratio's interval;
* zero-shot, per metric (``acc_norm`` in points, ``gold_bpb`` in bits per byte of the gold answer,
  lower is better): the task-macro mean difference, items resampled within tasks, and for
  ``acc_norm`` the exact McNemar p-value (``frankenllama.stages.evaluation.paired_table``).

A difference is called a loss or a gain only when its interval excludes 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from frankenllama.eval.paired import paired_difference
from frankenllama.stages.evaluation import paired_table, task_differences

ZERO_SHOT_METRICS = ("acc_norm", "gold_bpb")


def perplexity_comparison(original: list[float], compressed: list[float], n_boot: int, seed: int) -> dict[str, Any]:
    """Perplexities, their ratio (compressed / original) and its paired interval over blocks."""
    d = paired_difference(compressed, original, n_boot=n_boot, seed=seed)
    return {"blocks": d.n, "ppl_original": math.exp(d.mean_y), "ppl_compressed": math.exp(d.mean_x),
            "ppl_ratio": math.exp(d.diff), "ratio_low": math.exp(d.low), "ratio_high": math.exp(d.high),
            "nll_diff": d.diff, "nll_low": d.low, "nll_high": d.high, "significant": d.significant}  # fmt: skip


def _macro(tasks: dict[str, Any], metric: str) -> float:
    return float(np.mean([np.mean([item[metric] for item in r["items"]]) for r in tasks.values()]))


def zero_shot_comparison(original: dict[str, Any], compressed: dict[str, Any], n_boot: int, seed: int) -> dict[str, Any]:
    """Paired task-average differences (compressed − original) of each metric, and per-task ``acc_norm``."""
    stage = {"results": {"original": {"tasks": original}, "compressed": {"tasks": compressed}}}
    out: dict[str, Any] = {"items_per_task": {t: r["n"] for t, r in original.items()}}
    for metric in ZERO_SHOT_METRICS:
        row = paired_table(stage, metric, n_boot=n_boot, seed=seed).loc["compressed"]
        scale = 100.0 if metric == "acc_norm" else 1.0
        entry = {"original": scale * _macro(original, metric), "compressed": scale * _macro(compressed, metric),
                 "diff": float(row["diff"]), "low": float(row["low"]), "high": float(row["high"]),
                 "significant": bool(row["significant"])}  # fmt: skip
        if "p_value" in row:
            entry["mcnemar_p"] = float(row["p_value"])
        out[metric] = entry
    out["per_task_acc_norm"] = {t: {"original": 100 * original[t]["acc_norm"], "compressed": 100 * compressed[t]["acc_norm"]}
                                for t in original}  # fmt: skip
    # each task's own paired difference and interval (the task average above resamples items within tasks)
    out["per_task"] = {metric: {task: {"diff": float(r["diff"]), "low": float(r["low"]), "high": float(r["high"]),
                                       "significant": bool(r["significant"]), "n": int(r["n"])}
                                for task, r in task_differences(stage, "compressed", metric, n_boot=n_boot, seed=seed)
                                .drop(index="average").iterrows()}
                       for metric in ZERO_SHOT_METRICS}  # fmt: skip
    return out


def speed_summary(table: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Prefill / decode tokens/s of both models and their ratios (compressed / original) with the ideal L / L'."""
    comp = table["compressed"]
    keys = [k for k in comp if k.startswith(("prefill_tps", "decode_tps")) and not k.endswith(("_speedup", "_vs_ideal"))]
    out = {k: {"original": table["original"][k], "compressed": comp[k], "ratio": comp[f"{k}_speedup"]} for k in keys}
    out["ideal_ratio"] = comp["ideal_speedup"]
    out["peak_memory_bytes"] = {name: row["peak_memory"] for name, row in table.items()}
    return out


def _interval(value: float, low: float, high: float, fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(value)} [{fmt.format(low)}, {fmt.format(high)}]"


def _verdict(significant: bool, diff: float, lower_is_better: bool) -> str:
    if not significant:
        return "no difference the interval supports"
    return "compressed better" if (diff < 0) == lower_is_better else "compressed worse"


def markdown(report: dict[str, Any]) -> str:
    """The human-readable report (``report.md``) of a ``report.json`` dict."""
    c, s, h = report["choice"], report["size"], report["healing"]
    lines = [f"# Compressed {report['config']['model']} to {report['target']['description']}", "",
             f"`{report['command']}`", "", "## Choice", "",
             f"- strategy **{c['strategy']}** ({c['granularity']})" + (f", fallback from {c['requested']}: {c['fallback_reason']}" if c["fallback_reason"] else ""),
             f"- removed blocks: {c['removed_layers']}" + (f"; removed sub-blocks: {', '.join(c['removed_sublayers'])}" if c["removed_sublayers"] else ""),
             f"- healing: {h['recipe']}" + (f" ({h['note']})" if h.get("note") else "") + (f", {h['tokens_seen']:,} training tokens, {h['calib_tokens']:,} calibration tokens" if h.get("tokens_seen") is not None else ""),
             "", "## Size", "", "| | original | compressed | ratio |", "|---|---|---|---|",
             f"| parameters | {s['params_original']:,} | {s['params_compressed']:,} | {s['params_ratio']:.4f} |",
             f"| bytes at {s['dtype']} | {s['bytes_original']:,} | {s['bytes_compressed']:,} | {s['params_ratio']:.4f} |",
             f"| blocks | {s['layers_original']} | {s['layers_compressed']} | |", "",
             f"Target {report['target']['text']} ({report['target']['description']}): {'met' if s['meets_target'] else 'NOT met'}.",
             "", "## Perplexity (held-out, paired over blocks)", "",
             "| domain | corpus | blocks | original | compressed | ratio [95 % CI] | |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for domain, p in report["perplexity"].items():
        lines.append(f"| {domain} | {p['corpus']} | {p['blocks']} | {p['ppl_original']:.2f} | {p['ppl_compressed']:.2f} | "
                     f"{_interval(p['ppl_ratio'], p['ratio_low'], p['ratio_high'])} | {_verdict(p['significant'], p['nll_diff'], True)} |")
    z = report["zero_shot"]
    items = ", ".join(f"{task} {n}" for task, n in z["items_per_task"].items())
    lines += ["", f"## Zero-shot (paired over the same items: {items})", "",
              "| metric | original | compressed | difference [95 % CI] | |", "|---|---|---|---|---|"]
    for metric in ZERO_SHOT_METRICS:
        e = z[metric]
        p = f"; McNemar p = {e['mcnemar_p']:.3g}" if "mcnemar_p" in e else ""
        lines.append(f"| {metric} | {e['original']:.3f} | {e['compressed']:.3f} | {_interval(e['diff'], e['low'], e['high'])} | "
                     f"{_verdict(e['significant'], e['diff'], metric == 'gold_bpb')}{p} |")
    lines += ["", "acc_norm in points (task average), gold_bpb in bits per byte of the gold answer (lower is better)."]
    if "per_task" in z:  # reports written before it was added have no per-task intervals
        lines += ["", "Per task (each task's own paired interval):", "",
                  "| task | items | acc_norm original | compressed | difference [95 % CI] "
                  "| gold_bpb difference [95 % CI] |",
                  "|---|---|---|---|---|---|"]
        for task, acc in z["per_task"]["acc_norm"].items():
            bpb, raw = z["per_task"]["gold_bpb"][task], z["per_task_acc_norm"][task]
            lines.append(f"| {task} | {acc['n']} | {raw['original']:.1f} | {raw['compressed']:.1f} | "
                         f"{_interval(acc['diff'], acc['low'], acc['high'], '{:+.1f}')} | "
                         f"{_interval(bpb['diff'], bpb['low'], bpb['high'], '{:+.3f}')} |")
    lines += ["",
              "## Speed (compressed / original, measured side by side)", ""]
    sp = report["speed"]
    lines += [f"- {k}: {v['original']:.1f} → {v['compressed']:.1f} tokens/s, ratio {v['ratio']:.3f}" for k, v in sp.items() if isinstance(v, dict) and "ratio" in v]
    lines += [f"- ideal ratio (blocks): {sp['ideal_ratio']:.3f}", "", "## Wall time per step", "",
              "| step | seconds | cached |", "|---|---|---|"]
    lines += [f"| {name} | {t['seconds']:.1f} | {t['cached']} |" for name, t in report["steps"].items()]
    prov = report["provenance"]
    lines += ["", "## Provenance", "", f"- seed {prov['seed']}, code version {prov['code']['version']}, created {prov['created']}",
              f"- versions: {', '.join(f'{k} {v}' for k, v in prov['versions'].items())}", ""]
    return "\n".join(lines)
