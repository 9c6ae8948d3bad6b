"""Probe: is part-swap's cut, chosen by calibration NLL, also a local optimum of the KL divergence to the original?

Part-swap minimises the pruned model's next-token NLL on calibration text; distillation heals towards the
original's distribution, and a cut that keeps that distribution (lower KL) might heal to better zero-shot answers.
On 2,048 tokens of wiki-leads ``calib`` (16 blocks of 128, twice the selection's), this measures the KL to the
original and the NLL of the recipe's cut (``PART_SWAP_20``) and of every same-kind swap that puts one of its
removed attentions (MLPs) back and removes instead one of the 4 kept attentions (MLPs) whose removal alone costs
the least KL: 48 trials, one JSON line each, and a summary line appended to results/kl_swap_probe.jsonl.

Session 25 (921 s on the AMD VM): the cut has KL 0.7531 and NLL 3.5929, the lowest NLL of all 48 trials. Two
swaps lower the KL, both by putting 5.attn back: for 7.attn (0.7480, -0.7 %; NLL 3.5991) and for 26.attn
(0.7528). The first is the second part-swap round's cut that session 19 healed and measured: +0.25 points of
acc_norm [-1.1, +1.7] against the recipe on 1,200 items (bench/results/README.md). No new cut to try.

    python bench/kl_swap_probe.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from _development import PART_SWAP_20, kl_and_nll  # bench/_development.py
from frankenllama.stages.common import DataConfig, shared_model
from frankenllama.sublayer import prune_sublayers
from frankenllama.units import describe

RESULTS = Path(__file__).parent / "results" / "kl_swap_probe.jsonl"
WIDTH = 4  # kept sub-blocks of each kind tried, the cheapest by single-removal KL (part-swap's width)

torch.set_num_threads(2)
teacher, tok = shared_model("smollm2-135m")
blocks = DataConfig("wiki-leads", "calib", 128, 16).blocks(tok, teacher)  # 2,048 tokens: the selection's first 16 blocks
t0 = time.time()


def stats(model) -> tuple[float, float]:
    """Mean KL(original ‖ model) per position and mean next-token NLL of ``model`` on the blocks."""
    return kl_and_nll(teacher, model, blocks)


base = list(PART_SWAP_20)
kl0, nll0 = stats(prune_sublayers(teacher, base))
print(json.dumps({"cut": describe(base), "kl": kl0, "nll": nll0}), flush=True)
single = {u: stats(prune_sublayers(teacher, [u]))[0] for u in range(2 * len(teacher.model.layers)) if u not in base}
rows = []
for kind in (0, 1):  # attention (2l), MLP (2l + 1)
    for c in sorted((u for u in single if u % 2 == kind), key=lambda u: single[u])[:WIDTH]:
        for r in (u for u in base if u % 2 == kind):
            kl, nll = stats(prune_sublayers(teacher, sorted(set(base) - {r} | {c})))
            rows.append({"put_back": describe([r])[0], "remove": describe([c])[0], "kl": kl, "nll": nll})
            print(json.dumps(rows[-1]), flush=True)
summary = {"base_kl": kl0, "base_nll": nll0, "best": min(rows, key=lambda r: r["kl"]),
           "better_kl": sum(r["kl"] < kl0 for r in rows), "lower_nll": sum(r["nll"] < nll0 for r in rows),
           "trials": len(rows), "seconds": round(time.time() - t0)}
print(json.dumps(summary))
with RESULTS.open("a") as f:
    f.write(json.dumps(summary) + "\n")
