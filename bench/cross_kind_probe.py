"""Probe: does trading one removed MLP for three removed attentions help at the same size?

In SmolLM2-135M an MLP sub-block holds exactly three times an attention sub-block's parameters
(3 x 576 x 1536 against 2 x 576 x 576 + 2 x 576 x 192), so putting back one removed MLP and
removing three more attentions keeps the parameter count to the weight. Part-swap only swaps
like for like; He et al. 2024 (arXiv:2406.15786) find attention sub-blocks far more redundant
than MLPs, which would favour cuts with more attentions. This screen measures, on the calibration
text part-swap searches on (wiki-leads calib, the default profile's 8 blocks of 128 tokens, or
--blocks / --len), the unhealed calibration NLL of part-swap's 20 % cut and of every cross-kind
trade: each removed MLP put back with the three (then six, for two MLPs) kept attentions cheapest
on top of the cut. The winners go to ``zero_shot_recipe_probe.py --units`` for healing.

    python bench/cross_kind_probe.py --width 6
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from _development import PART_SWAP_20  # bench/_development.py
from frankenllama.models import num_layers
from frankenllama.scoring.trunk import Trunk
from frankenllama.stages.common import DataConfig, shared_model
from frankenllama.units import ATTN, MLP, describe, part_of, removal_mask

RESULTS = Path(__file__).parent / "results" / "cross_kind_probe.jsonl"

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--blocks", type=int, default=8)
p.add_argument("--len", type=int, default=128)
p.add_argument("--width", type=int, default=6, help="cheapest kept attentions among which the added ones are chosen")
p.add_argument("--trades", type=int, default=2, help="MLPs put back at most (each for three attentions)")
a = p.parse_args()
t0 = time.time()
model, tok = shared_model("smollm2-135m")
L = num_layers(model)
ids = DataConfig("wiki-leads", "calib", a.len, a.blocks).blocks(tok, model)
trunk = Trunk(model, ids, 4)
trunk.refresh(removal_mask((), L, "sublayer"))
count = float(trunk.n_predictions().sum())


def loss(units) -> float:
    return float(trunk.mask_nll(removal_mask(sorted(units), L, "sublayer")).sum()) / count


start = list(PART_SWAP_20)
base = loss(start)
kept_attn = [u for u in range(2 * L) if part_of(u) == ATTN and u not in start]
# the cost of removing one more attention on top of the cut
extra = {c: loss([*start, c]) - base for c in kept_attn}
cheapest = sorted(kept_attn, key=lambda c: extra[c])[: a.width]
print(f"cut {describe(start)}: calibration NLL {base:.4f}")
print("cheapest extra attentions:", ", ".join(f"{describe([c])[0]} +{extra[c]:.4f}" for c in cheapest))
rows = []
for n in range(1, a.trades + 1):
    for back in itertools.combinations([u for u in start if part_of(u) == MLP], n):
        for added in itertools.combinations(cheapest, 3 * n):
            units = sorted(set(start) - set(back) | set(added))
            nll = loss(units)
            rows.append({"trades": n, "back": describe(back), "added": describe(added), "units": units,
                         "nll": nll, "delta": nll - base})
rows.sort(key=lambda r: r["nll"])
for r in rows[:12]:
    print(f"{r['delta']:+.4f}  back {r['back']}  remove {r['added']}  units {' '.join(map(str, r['units']))}")
with RESULTS.open("a") as f:
    f.write(json.dumps({"blocks": a.blocks, "len": a.len, "width": a.width, "base_nll": base,
                        "extra": {describe([c])[0]: extra[c] for c in kept_attn}, "best": rows[:12],
                        "wall_s": round(time.time() - t0)}) + "\n")
