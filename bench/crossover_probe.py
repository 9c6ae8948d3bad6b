"""Probe: is it the selection or the healing? One pipeline's cut healed with another pipeline's recipe.

Notebook 05 runs each pipeline whole (its selection, then its healing). This probe crosses them at
notebook 05's budget (the default profile's ``recipe.healing``: 4k training tokens, 32k calibration
tokens): ``--select P`` takes pipeline P's cut at k (read from notebook 02's committed
``figures/pruning_curve.csv``, the curves notebook 05 reads), ``--heal Q`` heals it as pipeline Q
does (Q's recipe and options; ``none`` leaves it unhealed). Development text only, never the blocks
the notebooks report: out of domain olmo-passages eval blocks 48-79, in domain wiki-leads eval
blocks 24-39 (256 tokens). Appends one JSON line per run to bench/results/crossover_probe.jsonl
(perplexity ratios to the unpruned model).

    python bench/crossover_probe.py --k 3 --select shortgpt frankenllama --heal shortgpt frankenllama
"""
import argparse
import ast
import csv
import dataclasses
import json
import time

import torch

from _development import development_blocks  # bench/_development.py (scripts run as python bench/<name>.py)
from frankenllama.eval.perplexity import perplexity
from frankenllama.healing import TeacherStreams, heal
from frankenllama.selection import get_strategy
from frankenllama.stages.common import shared_model
from frankenllama.stages.profiles import build
from frankenllama.stages.recipe import applied_recipe
from frankenllama.sublayer import prune_sublayers
from frankenllama.surgery import drop_layers

p = argparse.ArgumentParser()
p.add_argument("--k", type=int, nargs="+", default=[6])
p.add_argument("--select", nargs="+", default=["frankenllama"])
p.add_argument("--heal", nargs="+", default=["frankenllama"])
p.add_argument("--recipe", default=None, help="replace the healing pipeline's recipe (its options stay)")
p.add_argument("--set", nargs="*", default=[], help="extra HealConfig fields, name=value (python literal)")
p.add_argument("--tag", default="")
a = p.parse_args()
torch.set_num_threads(2)
extra = {k: ast.literal_eval(v) for k, v in (s.split("=", 1) for s in a.set)}
teacher, tok = shared_model("smollm2-135m")
ood, ind = development_blocks(tok)
o_t, i_t = perplexity(teacher, ood, batch_size=8), perplexity(teacher, ind, batch_size=8)
study = build("default").recipe
h = study.healing
calib, train = h.data("calib").blocks(tok, teacher), h.data("train").blocks(tok, teacher)
curves = list(csv.DictReader(open("figures/pruning_curve.csv")))
streams = TeacherStreams()
for k in a.k:
    for sel in a.select:
        strategy = study.pipeline(sel).strategy
        row = next(r for r in curves if r["strategy"] == strategy and int(r["k"]) == k)
        units = [int(u) for u in row["units"].split()]
        for hq in a.heal:
            t0 = time.perf_counter()
            torch.manual_seed(0)
            whole = get_strategy(strategy).granularity == "layer"
            student = drop_layers(teacher, units) if whole else prune_sublayers(teacher, units)
            pipe = None if hq == "none" else study.pipeline(hq)
            recipe, patched = (None, None) if pipe is None else applied_recipe(a.recipe or pipe.recipe, student)
            if recipe is None:  # `none`, a pipeline that does not heal (SLEB), or a patch with nothing to fold into
                model = student
            else:
                cfg = dataclasses.replace(h.heal_config(), recipe=recipe, eval_every=0, patch_layers=patched,
                                          **{**dict(pipe.heal), **extra})
                model = heal(student, tok, cfg, train_blocks=train, teacher=teacher, calib_blocks=calib,
                             progress=False, teacher_streams=streams).model
            o, i = perplexity(model, ood, batch_size=8), perplexity(model, ind, batch_size=8)
            out = {"tag": a.tag, "k": k, "select": sel, "units": row["units"], "heal": hq, "recipe": recipe,
                   "extra": {k_: str(v) for k_, v in extra.items()}, "ood_ratio": o / o_t, "ind_ratio": i / i_t,
                   "seconds": time.perf_counter() - t0}
            print(json.dumps(out), flush=True)
            with open("bench/results/crossover_probe.jsonl", "a") as f:
                f.write(json.dumps(out) + "\n")
