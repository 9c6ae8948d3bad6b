"""Probe (out of the workbook's scope: it makes the model narrower, not shallower): would width pruning of the
MLPs, at the recipe's size and with the recipe's distillation, keep zero-shot accuracy where depth pruning loses it?

Minitron (Muralidharan et al. 2024, arXiv:2407.14679) found that, distilled afterwards, models pruned in width
beat models pruned in depth at the same size. Here every MLP of SmolLM2 loses the same number of intermediate
channels (410 of 1,536: 12,300 channels of 3 x 576 weights, 21.25M parameters, the size of the recipe's 6
blocks' worth, 21.24M), each layer keeping the channels that contribute most to its output on wiki-leads
``calib`` text: mean |act_fn(gate x) * up x| of the channel times the norm of its ``down_proj`` column (an
activation-based importance as Minitron's). The result is a plain llama (intermediate size 1,126). Then the
recipe's distillation (KD-LoRA at ``kd_weight`` 0.5, rank 32, 32k training tokens; no linear patch: nothing
was removed from the stream's path). Zero-shot development items (seed 1), blocks and pairing as
``zero_shot_recipe_probe.py``; ``bench/pair_probes.py s26-width recipe-32k-400 --items 400`` pairs it with the
recipe.

    python bench/width_probe.py --items 400

Session 26 (451 s on the AMD VM): against the original -5.83 points of acc_norm [-8.25, -3.58], +0.155 gold bits
per byte, 1.57x / 1.32x the out-of-domain / in-domain perplexity; against the recipe -3.75 [-6.00, -1.58] points,
+0.201 bits per byte, 1.33x out of domain. At this healing budget the depth cut is far ahead.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch import nn

from _development import development_run, healing_data, measure, paired_row, recipe_arguments, recipe_config, record
from frankenllama.healing.pipeline import heal
from frankenllama.stages.common import DataConfig

RESULTS = Path(__file__).parent / "results" / "width_probe.jsonl"

p = recipe_arguments(__doc__.splitlines()[0], 400, "s26-width")
p.add_argument("--drop", type=int, default=410, help="intermediate channels removed from every MLP")
p.add_argument("--importance-tokens", type=int, default=8192, help="wiki-leads calib tokens the importance reads")
a = p.parse_args()
t0 = time.time()
teacher, tok, blocks, original = development_run(a.items)
train, calib = healing_data(tok, teacher, a.tokens, a.calib)
layers = teacher.model.layers
sums = [torch.zeros(teacher.config.intermediate_size) for _ in layers]


def record_activation(i: int):
    def hook(module, args):
        sums[i] += args[0].detach().abs().reshape(-1, args[0].shape[-1]).sum(0)
    return hook


handles = [layer.mlp.down_proj.register_forward_pre_hook(record_activation(i)) for i, layer in enumerate(layers)]
with torch.no_grad():
    ids = DataConfig("wiki-leads", "calib", 256, a.importance_tokens // 256).blocks(tok, teacher)
    for start in range(0, len(ids), 4):
        teacher(ids[start : start + 4], use_cache=False)
for handle in handles:
    handle.remove()

student = copy.deepcopy(teacher)
keep_n = teacher.config.intermediate_size - a.drop
with torch.no_grad():
    for i, layer in enumerate(student.model.layers):
        mlp = layer.mlp
        importance = sums[i] * mlp.down_proj.weight.norm(dim=0)
        keep = importance.argsort(descending=True)[:keep_n].sort().values
        for name in ("gate_proj", "up_proj"):
            old = getattr(mlp, name)
            new = nn.Linear(old.in_features, keep_n, bias=False)
            new.weight.copy_(old.weight[keep])
            setattr(mlp, name, new)
        old = mlp.down_proj
        new = nn.Linear(keep_n, old.out_features, bias=False)
        new.weight.copy_(old.weight[:, keep])
        mlp.down_proj = new
        mlp.intermediate_size = keep_n
student.config.intermediate_size = keep_n
removed = sum(q.numel() for q in teacher.parameters()) - sum(q.numel() for q in student.parameters())
print({"removed_params": removed, "intermediate_size": keep_n}, flush=True)
unhealed = measure(student, tok, blocks, a.items) if a.items <= 50 else None  # a quick look on small runs only
start = time.time()
model = heal(student, tok, recipe_config(a.tokens, a.calib, recipe="kd-lora", kd_weight=a.kdw), train_blocks=train,
             teacher=teacher, calib_blocks=calib, progress=False).model
heal_s = time.time() - start
got = measure(model, tok, blocks, a.items)
row = {"tag": a.tag, "drop": a.drop, "removed_params": removed, "tokens": a.tokens, "kdw": a.kdw,
       **paired_row(got, original), "heal_s": round(heal_s), "wall_s": round(time.time() - t0)}
if unhealed is not None:
    row["unhealed"] = paired_row(unhealed, original)
record(row, got, a.tag, a.items, RESULTS)
