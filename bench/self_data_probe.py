"""Probe: heal part-swap's 20 % cut on the original model's own chat answers (self-data distillation).

Self-data distillation (Thangarasa et al. 2024, arXiv:2410.09982) fine-tunes a pruned model on text the
unpruned model generated, so that healing stays on the instruct model's own distribution instead of
pulling it towards plain prose. Here the user turns are the first sentences of wiki-leads *train*
texts ("<sentence> Tell me more."), the original SmolLM2 answers by sampling (temperature ``--temp``),
and the chat-formatted exchanges are cut into training blocks like any corpus; the recipe is the same
(patch + KD-LoRA, kd 0.5, rank 32) at the same token budget. ``--mix`` keeps that fraction of the
training blocks as plain wiki-leads text. Measured exactly as bench/zero_shot_recipe_probe.py does
(development items and blocks, paired against the original; per-item pickles so two runs pair).

Session 16, 32k tokens, temperature 0.7 (results/self_data_probe.jsonl): -5.2 [-8.0, -2.5] points acc_norm,
gold +0.13 bits per byte, out of domain 1.38x; paired against the recipe on wiki-leads text at the same
budget (``bench/pair_probes.py s16-self-32k s16-kd05-32k``): -2.8 [-5.2, -0.7] points, +0.168 bits per
byte, 1.18x out of domain. Not adopted. Generating the 37k tokens took 392 s (16 answers at a time).

    python bench/self_data_probe.py --tokens 32768 --tag self-32k
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from _development import PART_SWAP_20, development_run, measure, paired_row, record
from frankenllama.data import load_corpus, token_blocks
from frankenllama.eval.zero_shot import apply_chat
from frankenllama.healing import HealConfig
from frankenllama.healing.pipeline import heal
from frankenllama.paths import CACHE_DIR
from frankenllama.stages.common import DataConfig
from frankenllama.stages.recipe import OURS_HEAL_OPTIONS, OURS_RECIPE
from frankenllama.sublayer import prune_sublayers

RESULTS = Path(__file__).parent / "results" / "self_data_probe.jsonl"

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--tokens", type=int, default=32768)
p.add_argument("--temp", type=float, default=0.7)
p.add_argument("--new", type=int, default=192, help="new tokens per answer")
p.add_argument("--mix", type=float, default=0.0,
               help="fraction of training blocks that are plain wiki-leads text (1: the recipe as it is, no generation)")
p.add_argument("--items", type=int, default=200)
p.add_argument("--tag", default="")
a = p.parse_args()
t0 = time.time()
teacher, tok, blocks, original = development_run(a.items)


def answers(n_tokens: int) -> tuple[list[str], float]:
    """Chat exchanges (prompt + sampled answer) of the original, about ``n_tokens`` tokens in all (cached)."""
    path = CACHE_DIR / f"self_data_{n_tokens}_{a.temp}_{a.new}.json"
    if path.exists():
        got = json.loads(path.read_text())
        return got["texts"], got["seconds"]
    start, texts, total = time.time(), [], 0
    prompts = []
    for text in load_corpus("wiki-leads", "train"):
        end = re.search(r"[.!?] ", text[20:])
        if end:
            prompts.append(apply_chat(tok, text[: 20 + end.start() + 1].strip() + " Tell me more."))
    torch.manual_seed(0)
    tok.padding_side = "left"
    for i in range(0, len(prompts), 16):
        batch = tok(prompts[i : i + 16], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = teacher.generate(**batch, max_new_tokens=a.new, do_sample=a.temp > 0, temperature=a.temp or None,
                                   top_p=0.95, pad_token_id=tok.pad_token_id or tok.eos_token_id)
        for prompt, row in zip(prompts[i : i + 16], out[:, batch.input_ids.shape[1] :]):
            ids = row.tolist()
            if tok.eos_token_id in ids:
                ids = ids[: ids.index(tok.eos_token_id) + 1]
            texts.append(prompt + tok.decode(ids))
            total += len(tok(texts[-1], add_special_tokens=False).input_ids)
        print(f"generated {total} tokens in {time.time() - start:.0f} s", flush=True)
        if total >= n_tokens * 1.1:
            break
    tok.padding_side = "right"
    seconds = time.time() - start
    path.write_text(json.dumps({"texts": texts, "seconds": seconds}))
    return texts, seconds


n_blocks = a.tokens // 256
n_plain = round(a.mix * n_blocks)
gen_s = 0.0
parts = [token_blocks(tok, load_corpus("wiki-leads", "train"), 256, max_blocks=n_plain)] if n_plain else []
if n_plain < n_blocks:
    texts, gen_s = answers((n_blocks - n_plain) * 256)
    parts.append(token_blocks(tok, texts, 256, max_blocks=n_blocks - n_plain))
train = torch.cat(parts)[torch.randperm(n_blocks, generator=torch.Generator().manual_seed(0))]
print("training blocks", tuple(train.shape), flush=True)
config = HealConfig(recipe=OURS_RECIPE, tokens=a.tokens, batch_size=4, patch_tokens=32768, kd_top_k=64, seed=0,
                    **dict(OURS_HEAL_OPTIONS))  # the recipe: kd 0.5, LoRA rank 32
calib = DataConfig("wiki-leads", "calib", 256, 128).blocks(tok, teacher)
start = time.time()
model = heal(prune_sublayers(teacher, list(PART_SWAP_20)), tok, config, train_blocks=train, teacher=teacher,
             calib_blocks=calib, eval_blocks=None, progress=False).model
heal_s = time.time() - start
got = measure(model, tok, blocks, a.items)
row = {"tag": a.tag, "tokens": a.tokens, "temp": a.temp, "new": a.new, "mix": a.mix,
       **paired_row(got, original), "gen_s": round(gen_s), "heal_s": round(heal_s), "wall_s": round(time.time() - t0)}
record(row, got, a.tag, a.items, RESULTS)
