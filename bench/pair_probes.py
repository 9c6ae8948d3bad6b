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

from _development import METRICS, paired, saved_run

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("a", help="tag of run A")
p.add_argument("b", help="tag of run B (or 'original')")
p.add_argument("--items", type=int, default=200)
args = p.parse_args()


def load(tag: str) -> dict:
    path = saved_run(tag, args.items)
    if not path.exists():
        raise SystemExit(f"no saved probe run {tag!r} ({path}); run a probe with --tag {tag} --items {args.items} first")
    return pickle.loads(path.read_bytes())


a, b = load(args.a), load(args.b)
print(f"{args.a} - {args.b}, paired over the same items (95 % intervals, stratified by task)")
diffs = paired(a, b)
for name, _, _, _, digits in METRICS:
    d = diffs[name]
    print(f"  {name:9s} {d.diff:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}]")
for domain in ("ood", "ind"):
    print(f"  perplexity {domain}: {a[domain] / b[domain]:.3f}x")
