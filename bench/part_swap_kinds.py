"""Probe: is the recipe's cut a local optimum when the part-swap search may also swap MLPs?

``part-swap`` (``frankenllama.selection``) starts from the swap search's whole blocks and swaps
attention sub-blocks only, one round on the default profile. This runs its search to convergence
(up to 8 rounds) from the cut ``compress --target 0.843`` removes (``PART_SWAP_20``), on the default
profile's calibration text and one-sub-block-out costs (read from the cache notebook 02 fills), twice:
swapping attentions only, then attentions and MLPs (each kind for its own kind, so the size stays).
Prints each search's final cut, calibration NLL and swaps.

    python bench/part_swap_kinds.py
"""

from __future__ import annotations

import time

import torch

from _development import PART_SWAP_20  # bench/_development.py
from frankenllama.scoring.search import part_swap_search
from frankenllama.stages.profiles import build
from frankenllama.stages.pruning import scoring_context
from frankenllama.units import ATTN, MLP

torch.set_num_threads(2)
ctx = scoring_context(build("default", model="smollm2-135m").pruning)
cost = ctx.scan("sublayer").delta_nll()
for parts, name in (((ATTN,), "attention swaps"), ((ATTN, MLP), "attention and MLP swaps")):
    start = time.time()
    r = part_swap_search(ctx.model, ctx.calib, list(PART_SWAP_20), cost, width=4, parts=parts,
                         batch_size=ctx.batch_size, max_rounds=8)
    print(f"{name}: removed {r.removed}, calibration NLL {r.start_nll:.4f} -> {r.nll:.4f}, "
          f"swaps (put back, removed) {r.swaps}, {time.time() - start:.0f} s")
