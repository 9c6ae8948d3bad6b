"""The acc_norm gap of a compressed model on many more items than any report scores: every ARC-Easy
and PIQA validation item and ``--hellaswag`` HellaSwag ones (seed 0), paired with the original; or
every item of other ``--tasks`` (``--limit`` items each, seed 0), for the tasks no step was chosen on.

The reports score 150 items per task (``compress``) or 40-50 (notebooks 04-05), where acc_norm's paired
interval is 3-8 points wide on each side; this measures how far the recipe really is from the original.
Items are the benchmarks' validation items, which no step trains or calibrates on; the development probes
(seed 1, 400 per task) and compress's reported items (seed 0, 150 per task) are among them.

    python bench/gap_many_items.py /tmp/smol-0.843 --hellaswag 1000
    python bench/gap_many_items.py /tmp/smol-0.843 --tasks arc_challenge winogrande openbookqa sciq
"""

from __future__ import annotations

import argparse
import json
import pickle
import time

import numpy as np
import torch

from frankenllama.eval.paired import mcnemar, paired_difference
from frankenllama.eval.zero_shot import evaluate_tasks
from frankenllama.models import load_model
from frankenllama.paths import CACHE_DIR
from frankenllama.stages.common import shared_model

DEFAULT = ("arc_easy", "piqa", "hellaswag")  # the reports' tasks, the ones the recipe was developed on

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("model", help="the compressed model's folder (compress --out)")
p.add_argument("--hellaswag", type=int, default=1000, help="HellaSwag items (of 10,042), drawn with seed 0")
p.add_argument("--tasks", nargs="+", default=list(DEFAULT), help="registry tasks (not the default three: every item "
               "of each, or --limit)")
p.add_argument("--limit", type=int, default=None, help="items per task of --tasks, drawn with seed 0 (default: all)")
args = p.parse_args()
torch.set_num_threads(2)
default = tuple(args.tasks) == DEFAULT
limits = ({"arc_easy": None, "piqa": None, "hellaswag": args.hellaswag} if default
          else {t: args.limit for t in args.tasks})
# the default three keep the cache names of session 22's runs; other task sets are named by their tasks
suffix = str(args.hellaswag) if default else f"{'-'.join(args.tasks)}_{args.limit or 'all'}"


def scores(model, tokenizer, name: str) -> dict[str, list]:
    """Per-item (acc_norm, gold_bpb, gold_prob_norm) by task, kept in the cache under ``name``."""
    path = CACHE_DIR / f"gap_many_items_{name}_{suffix}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    started = time.perf_counter()
    got = {}
    for task, limit in limits.items():
        result = evaluate_tasks(model, tokenizer, task, limit, seed=0, chat_template=True, progress=True)[task]
        got[task] = [(i.acc_norm, i.gold_bpb, i.gold_prob_norm) for i in result.items]
    print(f"{name}: {time.perf_counter() - started:.0f} s")
    path.write_bytes(pickle.dumps(got))
    return got


original, tokenizer = shared_model("smollm2-135m")
base = scores(original, tokenizer, "original")
compressed, _ = load_model(args.model)
ours = scores(compressed, tokenizer, str(args.model).strip("/").replace("/", "_"))

tasks = list(limits)
groups = np.concatenate([[t] * len(base[t]) for t in tasks])


def column(s: dict, j: int, scale: float) -> np.ndarray:
    return scale * np.concatenate([[row[j] for row in s[t]] for t in tasks])


row = {"model": str(args.model), "items": {t: len(base[t]) for t in tasks}}
for name, j, scale in (("acc_norm", 0, 100.0), ("prob_norm", 2, 100.0), ("bpb", 1, 1.0)):
    d = paired_difference(column(ours, j, scale), column(base, j, scale), groups=groups)
    row[name] = [round(d.diff, 3), round(d.low, 3), round(d.high, 3)]
for t in tasks:
    a, b = 100.0 * np.array([r[0] for r in ours[t]]), 100.0 * np.array([r[0] for r in base[t]])
    d = paired_difference(a, b)
    row[f"acc_norm_{t}"] = [round(d.diff, 2), round(d.low, 2), round(d.high, 2)]
    row[f"lost_gained_{t}"] = [int(((b > 0) & (a == 0)).sum()), int(((b == 0) & (a > 0)).sum())]  # answers changed
row["mcnemar_p"] = round(mcnemar(column(ours, 0, 1.0).astype(int), column(base, 0, 1.0).astype(int)).p_value, 4)
print(json.dumps(row))
with open("bench/results/gap_many_items.jsonl", "a") as f:
    f.write(json.dumps(row) + "\n")
