"""Probe: does part-swap's cut at 20 % of SmolLM2's decoder change with more selection calibration tokens?

The default profile scores and searches on 8 blocks of 128 tokens of wiki-leads ``calib`` (1,024 tokens;
the one-sub-block-out scan, part-swap's cost, on the first 4). SLEB's choice at k = 6 made on half of those
blocks shares only 4 of its 6 blocks with the one made on all (Jaccard 0.5, ``figures/selection_stability.csv``),
so the cut might be noise of the calibration text. This reruns the whole selection that ``compress --target 0.843`` makes
(similarity, scans, SLEB, swap search, part-swap at 12 sub-blocks) with ``--blocks`` calibration blocks and
``--sub`` of them for the sub-block scan, and prints the cut (one JSON line, appended to
results/selection_tokens_probe.jsonl).

Session 25, 4x the tokens (``--blocks 32 --sub 16``: 4,096 and 2,048 tokens), 846 s on the AMD VM: the same
cut as the default's, 5.attn, 13.mlp and blocks 14-18 (``PART_SWAP_20``).

    python bench/selection_tokens_probe.py --blocks 32 --sub 16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from _development import PART_SWAP_20  # bench/_development.py
from frankenllama.selection import STRATEGIES
from frankenllama.stages.profiles import build
from frankenllama.stages.pruning import scoring_context
from frankenllama.units import describe

RESULTS = Path(__file__).parent / "results" / "selection_tokens_probe.jsonl"

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--blocks", type=int, default=32, help="calibration blocks of 128 tokens for the scans and searches")
p.add_argument("--sub", type=int, default=16, help="of which the one-sub-block-out scan reads the first this many")
a = p.parse_args()
torch.set_num_threads(2)
t0 = time.time()
run = build("default", overrides={"pruning.scoring.calib.n_blocks": a.blocks, "pruning.scoring.sublayer_blocks": a.sub})
cut = [int(u) for u in STRATEGIES["part-swap"].select(scoring_context(run.pruning), len(PART_SWAP_20))]
row = {"blocks": a.blocks, "sub": a.sub, "tokens": a.blocks * run.pruning.scoring.calib.block_len, "cut": cut,
       "described": describe(cut), "same_as_default": cut == list(PART_SWAP_20), "seconds": round(time.time() - t0)}
print(json.dumps(row))
with RESULTS.open("a") as f:
    f.write(json.dumps(row) + "\n")
