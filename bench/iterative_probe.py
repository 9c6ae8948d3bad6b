"""Probe: does removing the cut in two rounds, healing after each, keep more zero-shot accuracy than one shot?

Iterative prune-and-heal at the same final cut and the same total budget as the recipe: round 1 removes
``--first`` (default: blocks 16-18, half of part-swap's 20 % cut) from the original and heals it with the
recipe on the first half of the training tokens; round 2 removes the rest of the cut (5.attn, 13.mlp,
blocks 14-15) from that healed model and heals it on the second half. Both rounds distil from the
original and fit their linear patch on the same calibration tokens as the one-shot recipe (round 2's
patch stands in for the whole removed run 14-18, fitted on the student as round 1 left it). Measured
on the development items and blocks (``_development``) and paired with the original; pair it with the
one-shot recipe by ``pair_probes.py <tag> s19-kd05-32k --items 400``.

    python bench/iterative_probe.py --items 400 --tag s20-iterative-32k
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _development import (  # bench/_development.py
    PART_SWAP_20, development_run, healing_data, measure, paired_row, recipe_config, record)
from frankenllama.healing.pipeline import heal
from frankenllama.sublayer import prune_sublayers
from frankenllama.units import layer_of

RESULTS = Path(__file__).parent / "results" / "zero_shot_recipe_probe.jsonl"

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--first", default="32 33 34 35 36 37", help="sub-block ids of the cut removed in round 1")
p.add_argument("--tokens", type=int, default=32768, help="training tokens of both rounds together")
p.add_argument("--calib", type=int, default=32768, help="calibration tokens of each round's linear patch")
p.add_argument("--items", type=int, default=200)
p.add_argument("--tag", default="s20-iterative-32k")
a = p.parse_args()
t0 = time.time()
first = sorted(int(u) for u in a.first.split())
rest = sorted(set(PART_SWAP_20) - set(first))
if not set(first) < set(PART_SWAP_20) or any(layer_of(u) > min(map(layer_of, first)) for u in rest):
    raise SystemExit("--first must be a part of the cut that lies after the rest of it (so the rest keeps its ids)")
teacher, tok, blocks, original = development_run(a.items)
train, calib = healing_data(tok, teacher, a.tokens, a.calib)
half = len(train) // 2
config = recipe_config(half * 256, a.calib)
model = teacher
for units, text in ((first, train[:half]), (rest, train[half:])):
    model = heal(prune_sublayers(model, units), tok, config, train_blocks=text, teacher=teacher, calib_blocks=calib,
                 eval_blocks=None, progress=False).model
heal_s = time.time() - t0
got = measure(model, tok, blocks, a.items)
row = {"tag": a.tag, "units": " ".join(map(str, PART_SWAP_20)), "rounds": [first, rest], "recipe": config.recipe,
       "tokens": a.tokens, "calib": a.calib, "len": 256, "batch": 4, "rank": config.lora_rank, "kdw": config.kd_weight,
       **paired_row(got, original), "heal_s": round(heal_s), "wall_s": round(time.time() - t0)}
record(row, got, a.tag, a.items, RESULTS)
