"""Probe: heal part-swap's 20 % cut with the residual stream distilled too, not only the next-token distribution.

Minitron (Muralidharan et al. 2024, arXiv:2407.14679) distils a depth-pruned student on the teacher's logits
*and* its intermediate states. Here the recipe (patch + KD-LoRA, kd 0.5, rank 32, wiki-leads text) gets
``--hidden`` times the relative squared error between the residual stream the student hands on at each cut
and the one the teacher has after its last removed block (``HealConfig.hidden_weight``; at the cut only).
That needs the teacher's states at every step, so distillation runs against the teacher online over the
whole vocabulary (``kd_top_k = 0``) instead of its cached top 64; ``--hidden 0`` measures that change alone.
Measured as bench/zero_shot_recipe_probe.py does: development items and blocks, paired against the
original, per-item scores saved under ``--tag`` so that ``bench/pair_probes.py`` pairs two runs. ``--layers all``
matches every kept block's output instead, against the teacher's stream where the next kept block reads it.

Session 17, 32k tokens (results/hidden_probe.jsonl); acc_norm in points against the original, then paired against
the recipe (``s16-kd05-32k``, -2.3) on the same items with gold bits per byte and out-of-domain perplexity:
    weight 0 (online full KL) -2.7      -0.3 [-0.8, +0.0]   +0.0015 bpb  1.00x   (the cached top-64 targets lose nothing)
    at the cut, weight 1      -2.7      -0.3 [-0.8, +0.0]   +0.002       1.00x
    every block, weight 1     -2.8      -0.5 [-1.2, +0.0]   +0.003       1.005x
    every block, weight 10    -2.3      +0.0 [-1.2, +1.2]   +0.006       1.03x
The relative squared error of the streams ends at 0.003 (cut) and 0.013-0.016 (mean over blocks); the extra
term changes the answer on a handful of items. Not adopted.

    python bench/hidden_probe.py --hidden 1 --tag s17-hidden1-32k
    python bench/hidden_probe.py --hidden 10 --layers all --tag s17-hiddenall10-32k
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _development import PART_SWAP_20, development_run, measure, paired_row, record
from frankenllama.data import load_corpus, token_blocks
from frankenllama.healing import HealConfig, trainer
from frankenllama.healing.pipeline import heal
from frankenllama.stages.common import DataConfig
from frankenllama.stages.recipe import OURS_HEAL_OPTIONS, OURS_RECIPE
from frankenllama.sublayer import prune_sublayers
from frankenllama.surgery import lineage

RESULTS = Path(__file__).parent / "results" / "hidden_probe.jsonl"

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--tokens", type=int, default=32768)
p.add_argument("--hidden", type=float, default=1.0, help="weight of the hidden-state error (HealConfig.hidden_weight)")
p.add_argument("--layers", choices=("cut", "all"), default="cut",
               help="cut: the stream at each cut (HealConfig.hidden_weight); all: every kept block's output against the "
                    "teacher's stream where the next kept block reads it, averaged (Minitron's intermediate states; probe only)")
p.add_argument("--items", type=int, default=200)
p.add_argument("--tag", default="")
a = p.parse_args()
t0 = time.time()
teacher, tok, blocks, original = development_run(a.items)
if a.layers == "all":  # probe only: the trainer's pairs swapped for every student block j against the teacher's stream
    # where block j + 1 reads it: after teacher block kept[j + 1] - 1 (the last removed block at a cut)
    def every_block(student):
        record = lineage(student)
        kept = record["kept_layers"]
        return [(j, (kept[j + 1] if j + 1 < len(kept) else record["original_num_hidden_layers"]) - 1)
                for j in range(len(kept))]

    trainer.cut_pairs = every_block
config = HealConfig(recipe=OURS_RECIPE, tokens=a.tokens, batch_size=4, patch_tokens=32768, kd_top_k=0,
                    hidden_weight=a.hidden, seed=0, **dict(OURS_HEAL_OPTIONS))
train = token_blocks(tok, load_corpus("wiki-leads", "train"), 256, max_blocks=a.tokens // 256)  # as zero_shot_recipe_probe
calib = DataConfig("wiki-leads", "calib", 256, 128).blocks(tok, teacher)
start = time.time()
result = heal(prune_sublayers(teacher, list(PART_SWAP_20)), tok, config, train_blocks=train, teacher=teacher,
              calib_blocks=calib, eval_blocks=None, progress=False)
heal_s = time.time() - start
got = measure(result.model, tok, blocks, a.items)
last = result.losses[-1] if result.losses else {}
row = {"tag": a.tag, "tokens": a.tokens, "hidden": a.hidden, "layers": a.layers, **paired_row(got, original),
       "final_hidden": round(last["hidden"], 4) if "hidden" in last else None, "heal_s": round(heal_s), "wall_s": round(time.time() - t0)}
record(row, got, a.tag, a.items, RESULTS)
