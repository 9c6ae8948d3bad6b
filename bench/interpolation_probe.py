"""Probe: does the recipe's healing drift too far from the original? Scale the healing update back.

The recipe (linear patch, then KD-LoRA with ``kd_weight`` 0.5 on wiki-leads) makes the student better
than the original on wiki-leads prose and on the gold answers' bits per byte, yet it picks the right
answer less often. One reading: half of the loss is cross-entropy on one narrow domain, which moves
the instruct model away from what the zero-shot items need. This probe heals part-swap's 20 % cut
twice on the development protocol (``bench/_development.py``: the patch alone, and the full recipe
at the same seed, so both share the patch to every bit), then measures the weights

    W(α) = W_patch + α · (W_recipe − W_patch)

for each ``--alphas`` value: α = 0 is the patch alone, α = 1 the recipe (session 18's line
``s18-kd05-32k``); in between, the merged LoRA update shrunk towards the patched model, as
WiSE-FT interpolates a fine-tuned model with its start (Wortsman et al. 2022, arXiv:2109.01903).
Prints and appends one JSON line per α to bench/results/zero_shot_recipe_probe.jsonl, each paired
against the original on the development items and blocks; ``bench/pair_probes.py`` pairs the runs
with each other (tags ``<tag>-a<α>``).

    python bench/interpolation_probe.py --alphas 0.5 0.75 --tag s19-wise
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from _development import (  # bench/_development.py
    PART_SWAP_20, development_run, healing_data, measure, paired_row, recipe_arguments, recipe_config, record)
from frankenllama.healing.pipeline import heal
from frankenllama.stages.recipe import OURS_RECIPE
from frankenllama.sublayer import prune_sublayers

RESULTS = Path(__file__).parent / "results" / "zero_shot_recipe_probe.jsonl"

p = recipe_arguments(__doc__.splitlines()[0], items=200, tag="s19-wise")
p.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.75], help="scales of the healing update to measure")
a = p.parse_args()
t0 = time.time()
teacher, tok, blocks, original = development_run(a.items)
train, calib = healing_data(tok, teacher, a.tokens, a.calib)
states = {}
for recipe in ("linear-patch", OURS_RECIPE):
    config = recipe_config(a.tokens, a.calib, recipe=recipe, kd_weight=a.kdw)  # the recipe's options, --kdw aside
    student = prune_sublayers(teacher, list(PART_SWAP_20))
    model = heal(student, tok, config, train_blocks=train, teacher=teacher, calib_blocks=calib, eval_blocks=None,
                 progress=False).model
    states[recipe] = {k: v.detach().clone() for k, v in model.state_dict().items()}
heal_s = time.time() - t0
patch, healed = states["linear-patch"], states[OURS_RECIPE]
assert patch.keys() == healed.keys(), "the two heals must give the same architecture"
for alpha in a.alphas:
    start = time.time()
    mixed = copy.deepcopy(model)
    mixed.load_state_dict({k: patch[k] + alpha * (healed[k] - patch[k]) if healed[k].is_floating_point() else healed[k]
                           for k in healed})
    with torch.inference_mode():
        got = measure(mixed, tok, blocks, a.items)
    row = {"tag": f"{a.tag}-a{alpha:g}", "units": " ".join(map(str, PART_SWAP_20)), "recipe": OURS_RECIPE,
           "alpha": alpha, "tokens": a.tokens, "calib": a.calib, "len": 256, "batch": 4, "rank": config.lora_rank,
           "kdw": a.kdw,
           **paired_row(got, original), "heal_s": round(heal_s), "wall_s": round(time.time() - start)}
    record(row, got, row["tag"], a.items, RESULTS)
