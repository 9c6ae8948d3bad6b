"""Probe: which healing keeps zero-shot accuracy at 20 % of SmolLM2's decoder removed (part-swap's cut).

Everything it measures is kept apart from what notebooks 04/05 and ``compress`` report: zero-shot items
drawn with seed 1 (200 per task of ARC-Easy, PIQA, HellaSwag; the reports draw with seed 0, so a few items
overlap by chance), olmo-passages eval blocks 48-79 and wiki-leads eval blocks 32-55 (256 tokens). Each
run is paired against the unpruned model on the same items and blocks: acc_norm (points) and gold-answer
bits per byte with 95 % paired-bootstrap intervals stratified by task, perplexity ratios. Prints and
appends one JSON line to bench/results/zero_shot_recipe_probe.jsonl. The session-7 lines chose
``LORA_RANK`` and the attention-projection patch of ``frankenllama.stages.recipe`` (see its comment);
their wall times are not comparable (some ran beside another job on the 2 cores).

    python bench/zero_shot_recipe_probe.py --recipe linear-patch+kd-lora --rank 32 --tag patch-kdlora-r32
    python bench/zero_shot_recipe_probe.py --load out/smol-0.843 --tag compress-output
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from _development import PART_SWAP_20, development_run, measure, paired_row, record  # bench/_development.py
from frankenllama.data import load_corpus, token_blocks
from frankenllama.eval.zero_shot import apply_chat
from frankenllama.healing import HealConfig
from frankenllama.healing.pipeline import heal
from frankenllama.models import load_model
from frankenllama.stages.common import DataConfig
from frankenllama.sublayer import prune_sublayers

RESULTS = Path(__file__).parent / "results" / "zero_shot_recipe_probe.jsonl"

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--units", default=" ".join(map(str, PART_SWAP_20)), help="sub-block ids to remove (2l attention, 2l+1 MLP)")
p.add_argument("--load", default="", help="measure a saved model folder instead of cutting --units")
p.add_argument("--recipe", default="none")
p.add_argument("--tokens", type=int, default=65536)
p.add_argument("--calib", type=int, default=32768, help="calibration tokens of the linear patch")
p.add_argument("--len", type=int, default=256, help="training block length")
p.add_argument("--lr", type=float, default=None)
p.add_argument("--rank", type=int, default=8, help="LoRA rank (alpha = 2 x rank)")
p.add_argument("--kdw", type=float, default=1.0, help="kd_weight")
p.add_argument("--batch", type=int, default=4, help="blocks per optimizer step (steps = tokens / (batch x len))")
p.add_argument("--chat", type=float, default=0.0,
               help="fraction of training texts put in the chat template (first sentence as the user turn)")
p.add_argument("--items", type=int, default=200)
p.add_argument("--tag", default="")
a = p.parse_args()
t0 = time.time()
teacher, tok, blocks, original = development_run(a.items)

model = load_model(a.load)[0] if a.load else prune_sublayers(teacher, [int(u) for u in a.units.split()])
heal_s = 0.0
if a.recipe != "none":
    texts = load_corpus("wiki-leads", "train")
    if a.chat > 0:
        chatted = []
        for i, text in enumerate(texts):
            end = re.search(r"[.!?] ", text[20:])
            if int((i + 1) * a.chat) > int(i * a.chat) and end:  # every 1/chat-th text (0.5: the odd ones)
                cut = 20 + end.start() + 1
                text = apply_chat(tok, text[:cut].strip()) + text[cut:].strip()
            chatted.append(text)
        texts = chatted
    config = HealConfig(recipe=a.recipe, tokens=a.tokens, batch_size=a.batch, lr=a.lr, kd_weight=a.kdw, lora_rank=a.rank,
                        lora_alpha=2.0 * a.rank, patch_tokens=a.calib, kd_top_k=64, seed=0)
    train = token_blocks(tok, texts, a.len, max_blocks=a.tokens // a.len)
    calib = DataConfig("wiki-leads", "calib", 256, a.calib // 256).blocks(tok, teacher)
    start = time.time()
    model = heal(model, tok, config, train_blocks=train, teacher=teacher, calib_blocks=calib, eval_blocks=None,
                 progress=False).model
    heal_s = time.time() - start
got = measure(model, tok, blocks, a.items)
row = {"tag": a.tag, "units": "" if a.load else a.units, "load": a.load, "recipe": a.recipe, "tokens": a.tokens,
       "calib": a.calib, "len": a.len, "batch": a.batch, "lr": a.lr, "rank": a.rank, "kdw": a.kdw, "chat": a.chat,
       **paired_row(got, original), "heal_s": round(heal_s), "wall_s": round(time.time() - t0)}  # fmt: skip
record(row, got, a.tag, a.items, RESULTS)
