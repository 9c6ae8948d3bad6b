"""Probe: which cut and healing recipe keeps out-of-domain perplexity at 20 % of SmolLM2's decoder removed.

Out-of-domain text: olmo-passages eval blocks 48-79 (256 tokens), kept apart from the first blocks the
notebooks report; in-domain: wiki-leads eval blocks 24-39. Prints and appends one JSON line per run to
bench/results/ood_recipe_probe.jsonl (ratios to the unpruned model). Session-5 results, on a heavily shared
2-core CPU (times not comparable), are in that file; they chose OURS_HEAL_OPTIONS in stages/recipe.py.
Session 6's lines tagged ps-kd32k-gen50 / -gen100 replaced half / all of the training blocks with the original
model's own unconditional samples (an option since removed: OOD 1.321 / 1.348 against 1.348 on wiki text alone,
in-domain 1.297 / 1.478 against 1.239; not adopted).

    python bench/ood_recipe_probe.py --cut partswap --recipe kd-lora --tokens 32768 --kd-weight 1.0
"""
import argparse, json, time
import torch
from _development import development_blocks  # bench/_development.py (scripts run as python bench/<name>.py)
from frankenllama.stages.common import DataConfig, shared_model
from frankenllama.eval.perplexity import perplexity
from frankenllama.surgery import drop_layers
from frankenllama.sublayer import prune_sublayers
from frankenllama.healing import HealConfig
from frankenllama.healing.pipeline import heal

p = argparse.ArgumentParser()
p.add_argument("--cut", default="block")  # block (13-18 angular) | partswap | strategy name
p.add_argument("--recipe", default="linear-patch+kd-lora")
p.add_argument("--tokens", type=int, default=32768)
p.add_argument("--calib", type=int, default=32768)
p.add_argument("--kd-weight", type=float, default=0.5)
p.add_argument("--lr", type=float, default=None)
p.add_argument("--rank", type=int, default=8)
p.add_argument("--bs", type=int, default=8)
p.add_argument("--len", type=int, default=256)
p.add_argument("--topk", type=int, default=64)
p.add_argument("--tag", default="")
a = p.parse_args()
torch.set_num_threads(2)
t0 = time.time()
teacher, tok = shared_model("smollm2-135m")
ood, ind = development_blocks(tok)
def ppl(m, x):
    return perplexity(m, x, batch_size=8)
if a.cut == "block":
    student = drop_layers(teacher, [13, 14, 15, 16, 17, 18]); cutdesc = "block 13-18"
else:
    units = "14 27 28 29 30 31 32 33 34 35 36 37"  # part-swap k=6 (figures/pruning_curve.csv): 7.attn 13.mlp 14-18
    cutdesc = f"part-swap {units}"
    student = prune_sublayers(teacher, [int(u) for u in units.split()])
cfg = None if a.recipe == 'none' else HealConfig(recipe=a.recipe, tokens=a.tokens, batch_size=a.bs, lr=a.lr, kd_weight=a.kd_weight, lora_rank=a.rank,
                 lora_alpha=2.0 * a.rank, patch_tokens=a.calib, kd_top_k=a.topk, seed=0)
train = DataConfig("wiki-leads", "train", a.len, a.tokens // a.len).blocks(tok, teacher)
calib = DataConfig("wiki-leads", "calib", 256, -(-a.calib // 256)).blocks(tok, teacher)
r = heal(student, tok, cfg, train_blocks=train, teacher=teacher, calib_blocks=calib, eval_blocks=None, progress=False) if a.recipe != "none" else None
m = r.model if r else student
o_t, i_t = ppl(teacher, ood), ppl(teacher, ind)  # measured every run: an unkeyed file could outlive its blocks
o_u, i_u = (ppl(student, ood), ppl(student, ind)) if a.recipe == 'none' else (float('nan'), float('nan'))
o_h, i_h = (o_u, i_u) if m is student else (ppl(m, ood), ppl(m, ind))
out = dict(tag=a.tag, cut=cutdesc, recipe=a.recipe, tokens=a.tokens, calib=a.calib, kd_weight=a.kd_weight, lr=cfg.learning_rate if cfg else 0, rank=a.rank,
           ood_ratio_unhealed=o_u / o_t, ood_ratio=o_h / o_t, ind_ratio_unhealed=i_u / i_t, ind_ratio=i_h / i_t, ood_teacher=o_t,
           wall_s=time.time() - t0, heal_s=(r.wall_time_s if r else 0))
print(json.dumps(out))
with open("bench/results/ood_recipe_probe.jsonl", "a") as f: f.write(json.dumps(out) + "\n")
