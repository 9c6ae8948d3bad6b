"""Probe: does a mode-seeking distillation loss keep the zero-shot choices better than the forward KL?

The recipe distils with the forward ``KL(p_t ‖ p_s)`` over the teacher's cached top 64 tokens and a
tail bucket. The forward KL is mass-covering: a student that cannot match the teacher spreads its
probability over everything the teacher allows, and the healed model gives every zero-shot ending
more probability, the wrong ones a little more than the right one (bench/results/README.md). The
reverse ``KL(p_s ‖ p_t)`` is mode-seeking (MiniLLM, Gu et al. 2024, arXiv:2306.08543). This probe
heals part-swap's 20 % cut with the recipe on the development protocol (``bench/_development.py``),
the divergence replaced in the trainer for this run only, over the same top-k + tail outcomes:

* ``reverse``: ``KL(p_s ‖ p_t)``;
* ``symmetric``: the mean of the forward and the reverse KL (Jeffreys).

Prints and appends one JSON line to bench/results/zero_shot_recipe_probe.jsonl, paired against the
original on the development items and blocks; ``bench/pair_probes.py`` pairs it with the recipe's run.

    python bench/divergence_probe.py --div reverse --items 400 --tag s23-rkl-32k
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

import frankenllama.healing.trainer as trainer
from _development import (  # bench/_development.py
    PART_SWAP_20, development_run, healing_data, measure, paired_row, recipe_arguments, recipe_config, record)
from frankenllama.healing.pipeline import heal
from frankenllama.healing.teacher import sparse_kl
from frankenllama.sublayer import prune_sublayers

RESULTS = Path(__file__).parent / "results" / "zero_shot_recipe_probe.jsonl"
TINY = 1e-8  # the teacher's tail mass is floored here: a student tail the teacher lacks costs log(p / 1e-8)


def reverse_kl(student_logp: torch.Tensor, indices: torch.Tensor, teacher_logp: torch.Tensor,
               s_top: torch.Tensor | None = None) -> torch.Tensor:
    """Mean per-position ``KL(p_s ‖ p_t)`` over the teacher's top-k tokens plus one "other" outcome."""
    if s_top is None:
        s_top = student_logp.gather(-1, indices)
    head = (s_top.exp() * (s_top - teacher_logp)).sum(-1)
    log_tail_s = torch.log(-torch.expm1(torch.logsumexp(s_top, dim=-1).clamp_max(-1e-7)))
    tail_t = (1 - teacher_logp.exp().sum(-1)).clamp_min(TINY)
    return (head + log_tail_s.exp() * (log_tail_s - tail_t.log())).mean()


def symmetric_kl(student_logp, indices, teacher_logp, s_top=None) -> torch.Tensor:
    return 0.5 * (sparse_kl(student_logp, indices, teacher_logp, s_top) + reverse_kl(student_logp, indices, teacher_logp, s_top))


DIVERGENCES = {"reverse": reverse_kl, "symmetric": symmetric_kl}

p = recipe_arguments(__doc__.splitlines()[0], items=400, tag="")
p.add_argument("--div", choices=sorted(DIVERGENCES), default="reverse")
a = p.parse_args()
t0 = time.time()
teacher, tok, blocks, original = development_run(a.items)
train, calib = healing_data(tok, teacher, a.tokens, a.calib)
trainer.sparse_kl = DIVERGENCES[a.div]  # the trainer's loss reads the name from its module
config = recipe_config(a.tokens, a.calib, kd_weight=a.kdw)
start = time.time()
model = heal(prune_sublayers(teacher, list(PART_SWAP_20)), tok, config, train_blocks=train, teacher=teacher,
             calib_blocks=calib, eval_blocks=None, progress=False).model
heal_s = time.time() - start
got = measure(model, tok, blocks, a.items)
row = {"tag": a.tag, "units": " ".join(map(str, PART_SWAP_20)), "recipe": config.recipe, "div": a.div, "tokens": a.tokens,
       "calib": a.calib, "len": 256, "batch": 4, "rank": config.lora_rank, "kdw": a.kdw,
       **paired_row(got, original), "heal_s": round(heal_s), "wall_s": round(time.time() - t0)}  # fmt: skip
record(row, got, a.tag, a.items, RESULTS)
