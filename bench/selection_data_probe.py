"""Probe: which sub-blocks part-swap removes at 20 % of SmolLM2's decoder, by calibration text and amount.

The default profile scores and searches on 8 wiki-leads calib blocks of 128 tokens (sub-blocks on the
first 4). This prints part-swap's choice (k = 12 sub-blocks, 6 blocks' worth) when the search instead
calibrates on ``--blocks`` blocks (``--sub`` for sub-blocks) of ``--len`` tokens of wiki-leads calib text
(``--text wiki``) or of the original model's own chat answers to wiki-leads train prompts (``--text
self``: bench/self_data_probe.py's cached generations, which must exist), with the seconds it took.
Heal and measure a choice with ``bench/zero_shot_recipe_probe.py --units ...``. Session 16 (results/
selection_data_probe.jsonl): on the original model's own answers part-swap removes block 6's attention
instead of block 5's and the same MLP and blocks 14-18, so the choice hardly depends on the text.

    python bench/selection_data_probe.py --text wiki --blocks 32 --sub 16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from frankenllama.data import token_blocks
from frankenllama.paths import CACHE_DIR
from frankenllama.scoring.context import SelectionContext
from frankenllama.selection import part_swap
from frankenllama.stages.common import DataConfig, shared_model
from frankenllama.stages.profiles import build
from frankenllama.stages.similarity import similarity_stage

RESULTS = Path(__file__).parent / "results" / "selection_data_probe.jsonl"
p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--text", choices=("wiki", "self"), default="wiki")
p.add_argument("--blocks", type=int, default=8)
p.add_argument("--sub", type=int, default=4)
p.add_argument("--len", type=int, default=128)
p.add_argument("--self-file", default="self_data_32768_0.7_192.json")
a = p.parse_args()
torch.set_num_threads(2)
model, tok = shared_model("smollm2-135m")
pruning = build("default").pruning
if a.text == "wiki":
    calib = DataConfig("wiki-leads", "calib", a.len, a.blocks).blocks(tok, model)
else:
    texts = json.loads((CACHE_DIR / a.self_file).read_text())["texts"]
    calib = token_blocks(tok, texts[::-1], a.len, max_blocks=a.blocks)  # from the end: the training probe reads the start
start = time.time()
ctx = SelectionContext(similarity_stage(pruning.similarity), model, calib, batch_size=4, shortlist=pruning.scoring.shortlist,
                       progress=False, sublayer_blocks=a.sub)
units = sorted(part_swap(ctx, 12))
row = {"text": a.text, "blocks": a.blocks, "sub": a.sub, "len": a.len, "units": units, "seconds": round(time.time() - start)}
print(json.dumps(row))
with RESULTS.open("a") as f:
    f.write(json.dumps(row) + "\n")
