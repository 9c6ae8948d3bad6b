"""Probe: the linear patch's ridge towards plain removal (``patch_ridge``), on notebook 05's recipe cut at 20 %.

The cut is part-swap at k = 6 of SmolLM2 (5.attn, 13.mlp, blocks 14-18: notebook 02's pruning curves); the
patch folds into block 13's attention output. Calibration: notebook 05's 32k wiki-leads calib tokens
(256 x 128). Development text only, never the reported blocks: out of domain olmo-passages eval blocks
48-79 (256 tokens; the notebooks report the first 6-32), in domain wiki-leads eval blocks 24-39.
``--stage patch``: the patch alone at each ridge (and no patch); ``--stage recipe``: notebook 05's whole
recipe (patch, then KD-LoRA at its 4k-token budget; ``--tokens`` for compress's 64k). Appends one JSON line
per run to bench/results/patch_ridge_probe.jsonl (perplexity ratios to the unpruned model).

    python bench/patch_ridge_probe.py --stage patch --ridges 0 0.003 0.01 0.03 0.1 0.3 1
    python bench/patch_ridge_probe.py --stage recipe --ridges 0 1 3

Session 10 (lines tagged s10; out of domain / in domain, ratios to the original on the development blocks):
patch alone, no patch 1.687 / 1.825; ridge 0 1.549 / 1.377; 0.01 1.536 / 1.377; 0.1 1.514 / 1.387;
1 1.489 / 1.412 (a steady trade: each step towards plain removal buys a little out of domain for a little in
domain). The whole recipe at notebook 05's budget: ridge 0 1.435 / 1.302, 1 1.394 / 1.320, 3 1.394 / 1.327.
Not adopted: 3 % out of domain for 1.4 % in domain is inside notebook 05's intervals (about ±6 % on 6 blocks)
and cannot change which pipeline wins there; the default stays least squares (ridge 0).
"""
import argparse
import dataclasses
import json
import time

import torch

from _development import PART_SWAP_20, development_blocks  # bench/_development.py (scripts run as python bench/<name>.py)
from frankenllama.eval.perplexity import perplexity
from frankenllama.healing import TeacherStreams, heal, linear_patch
from frankenllama.stages.common import shared_model
from frankenllama.stages.profiles import build
from frankenllama.stages.recipe import OURS, applied_recipe
from frankenllama.sublayer import prune_sublayers


p = argparse.ArgumentParser()
p.add_argument("--stage", choices=("patch", "recipe"), default="patch")
p.add_argument("--ridges", type=float, nargs="+", default=[0.0])
p.add_argument("--tokens", type=int, default=None, help="training tokens (default: notebook 05's)")
p.add_argument("--tag", default="")
a = p.parse_args()
torch.set_num_threads(2)
teacher, tok = shared_model("smollm2-135m")
ood, ind = development_blocks(tok)
o_t, i_t = perplexity(teacher, ood, batch_size=8), perplexity(teacher, ind, batch_size=8)
prof = build("default")
h = prof.recipe.healing if a.tokens is None else dataclasses.replace(prof.recipe.healing, tokens=a.tokens)
calib = h.data("calib").blocks(tok, teacher)
train = h.data("train").blocks(tok, teacher) if a.stage == "recipe" else None
streams = TeacherStreams()
runs = [None, *a.ridges] if a.stage == "patch" else a.ridges
for ridge in runs:
    t0 = time.perf_counter()
    student = prune_sublayers(teacher, PART_SWAP_20)
    if a.stage == "patch":
        fits = [] if ridge is None else linear_patch(student, teacher, calib, ridge=ridge, streams=streams)
        model, extra = student, {"rel_error": [f.rel_error for f in fits], "rel_error_identity": [f.rel_error_identity for f in fits]}
    else:
        pipe = prof.recipe.pipeline(OURS)
        recipe, patched = applied_recipe(pipe.recipe, student)
        cfg = dataclasses.replace(h.heal_config(), recipe=recipe, eval_every=0, patch_layers=patched, patch_ridge=ridge,
                                  **dict(pipe.heal))
        result = heal(student, tok, cfg, train_blocks=train, teacher=teacher, calib_blocks=calib, progress=False,
                      teacher_streams=streams)
        model, extra = result.model, {"recipe": recipe, "tokens": cfg.tokens, "heal_s": result.wall_time_s}
    o, i = perplexity(model, ood, batch_size=8), perplexity(model, ind, batch_size=8)
    out = {"tag": a.tag, "stage": a.stage, "ridge": ridge, "ood_ratio": o / o_t, "ind_ratio": i / i_t, **extra,
           "calib_tokens": calib.numel(), "seconds": time.perf_counter() - t0}
    print(json.dumps(out), flush=True)
    with open("bench/results/patch_ridge_probe.jsonl", "a") as f:
        f.write(json.dumps(out) + "\n")
