"""Pair two saved probe runs with each other on their development items and blocks.

``bench/zero_shot_recipe_probe.py`` and ``bench/self_data_probe.py`` save each tagged run's per-item
scores (``data/cache/zero_shot_probe_<tag>_<items>.pkl``); two runs read the same items in the same
order, so their difference is paired: acc_norm and normalised gold probability in points, gold bits per
byte, each with a 95 % paired-bootstrap interval stratified by task, plus each run's perplexity ratio
between the two (A / B) on the development blocks. ``original`` names the unpruned model's reference.

    python bench/pair_probes.py s16-kd1-32k s16-kd05-32k
"""

from __future__ import annotations

import argparse
import pickle

import numpy as np

from frankenllama.eval.paired import paired_difference
from frankenllama.paths import CACHE_DIR

TASKS = ("arc_easy", "piqa", "hellaswag")
METRICS = (("acc_norm", 0, 100.0, "{:+.2f} pts"), ("prob_norm", 2, 100.0, "{:+.2f} pts"), ("gold_bpb", 1, 1.0, "{:+.4f}"))

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("a", help="tag of run A")
p.add_argument("b", help="tag of run B (or 'original')")
p.add_argument("--items", type=int, default=200)
args = p.parse_args()


def load(tag: str) -> dict:
    name = f"zero_shot_probe_original_{args.items}_v2.pkl" if tag == "original" else f"zero_shot_probe_{tag}_{args.items}.pkl"
    path = CACHE_DIR / name
    if not path.exists():
        raise SystemExit(f"no saved probe run {tag!r} ({path}); run a probe with --tag {tag} --items {args.items} first")
    return pickle.loads(path.read_bytes())


runs = {"a": load(args.a), "b": load(args.b)}
groups = np.concatenate([[t] * len(runs["a"]["items"][t]) for t in TASKS])
print(f"{args.a} - {args.b}, paired over {groups.size} items (95 % intervals, stratified by task)")
for name, j, scale, fmt in METRICS:
    x, y = (np.concatenate([[s[j] for s in r["items"][t]] for t in TASKS]) * scale for r in runs.values())
    d = paired_difference(x, y, groups=groups)
    print(f"  {name:9s} {fmt.format(d.diff)} [{fmt.format(d.low)}, {fmt.format(d.high)}]")
for domain in ("ood", "ind"):
    print(f"  perplexity {domain}: {runs['a'][domain] / runs['b'][domain]:.3f}x")
