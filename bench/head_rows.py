"""Bench: the searches' LM head run one calibration sample at a time against several samples per product.

SmolLM2-135M-Instruct on the calibration blocks notebook 02's default profile scores with (8 blocks of 128 wiki-leads
tokens, 4 per batch). The workload is the one-block-out scan of the 30 blocks (``Trunk.mask_nll`` of each block
removed alone, from the cached streams): every candidate runs the blocks after its own, the final norm and the LM
head with its NLL. Both ways run in one process, alternately (each way first once), with ``trunk.HEAD_ROWS = 1``
(one sample per product, the code before) and the default. Prints the seconds of each, the ratio, and whether the
NLL of every sample of every candidate is bit-identical. A ratio, not a timed assertion.

    python bench/head_rows.py [--blocks 8]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from frankenllama.scoring import trunk as trunk_module
from frankenllama.scoring.trunk import Trunk
from frankenllama.stages.common import shared_model
from frankenllama.stages.profiles import build
from frankenllama.units import removal_mask

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--blocks", type=int, default=8, help="calibration blocks of 128 tokens")
a = p.parse_args()
torch.set_num_threads(2)
model, tokenizer = shared_model("smollm2-135m")
calib = build("default").pruning.scoring.calib
ids = calib.blocks(tokenizer, model)[: a.blocks]
trunk = Trunk(model, ids, batch_size=4)
L = trunk.num_layers
trunk.refresh(np.zeros((L, 2), dtype=bool))
default_rows = trunk_module.HEAD_ROWS


def scan(rows: int) -> tuple[float, torch.Tensor]:
    trunk_module.HEAD_ROWS = rows
    started = time.perf_counter()
    nll = torch.stack([trunk.mask_nll(removal_mask([layer], L, "layer")) for layer in range(L)])
    return time.perf_counter() - started, nll


seconds = {1: 0.0, default_rows: 0.0}
nlls: dict[int, torch.Tensor] = {}
for rows in (1, default_rows, default_rows, 1):  # each way first once: neither gets a warm start alone
    spent, nlls[rows] = scan(rows)
    seconds[rows] += spent
trunk_module.HEAD_ROWS = default_rows
same = torch.equal(nlls[1], nlls[default_rows])
print(f"one-block-out scan of {L} blocks on {len(ids)} x {ids.shape[1]} tokens, twice each way: "
      f"one sample per head product {seconds[1]:.1f} s, up to {default_rows} rows {seconds[default_rows]:.1f} s, "
      f"ratio {seconds[1] / seconds[default_rows]:.2f}x; NLLs bit-identical: {same}")
