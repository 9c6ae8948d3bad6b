"""Bench: one KD-LoRA optimizer step as ``RecipeTrainer`` takes it against the plain formula, side by side.

The recipe's student (SmolLM2-135M, part-swap's 20 % cut), rank-32 LoRA, half cross-entropy and half the
KL to the teacher's cached top-64 targets, batches of 4 x 256 tokens. ``trainer``: the head runs on the
T-1 positions that predict a token and one gather reads the target and the top 64 from the log-softmax.
``plain``: logits of all T positions sliced to T-1, ``nll_loss``, and a second gather for the KL (the
textbook formula ``tests/test_healing.py`` checks the trainer against). Each way runs on its own copy,
alternating step by step on the same batches; prints the median seconds per step and the ratio.
A ratio, not a timed assertion.

    python bench/step_loss.py [--steps 6]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from _development import PART_SWAP_20  # bench/_development.py (scripts run as python bench/<name>.py)
from frankenllama.healing import HealConfig
from frankenllama.healing.teacher import sparse_kl, teacher_targets
from frankenllama.healing.trainer import RecipeTrainer
from frankenllama.stages.common import shared_model
from frankenllama.sublayer import prune_sublayers

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--steps", type=int, default=6)
a = p.parse_args()
torch.set_num_threads(2)
torch.manual_seed(0)
teacher, _ = shared_model("smollm2-135m")
student = prune_sublayers(teacher, PART_SWAP_20)
config = HealConfig(recipe="kd-lora", tokens=4 * 256 * (a.steps + 1), batch_size=4, lora_rank=32, lora_alpha=64.0)
batches = [torch.randint(0, teacher.config.vocab_size, (4, 256)) for _ in range(a.steps + 1)]
top = teacher_targets(teacher, torch.cat(batches), temperature=1.0, top_k=64)  # what a heal caches, row by row
targets = [top.rows(torch.arange(4 * i, 4 * i + 4)) for i in range(len(batches))]


def plain_step(t: RecipeTrainer, ids: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits = t.model(input_ids=ids, use_cache=False).logits[:, :-1].float()
    log_p = F.log_softmax(logits, -1)
    ce = F.nll_loss(log_p.reshape(-1, log_p.shape[-1]), ids[:, 1:].reshape(-1))
    loss = (1 - config.kd_weight) * ce + config.kd_weight * sparse_kl(log_p, *target)
    t.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(t.params, config.grad_clip)
    t.optimizer.step()
    t.scheduler.step()


ways = {"trainer": RecipeTrainer(copy.deepcopy(student), config, a.steps + 1, teacher),
        "plain": RecipeTrainer(copy.deepcopy(student), config, a.steps + 1, teacher)}
seconds: dict[str, list[float]] = {name: [] for name in ways}
for i, (ids, target) in enumerate(zip(batches, targets)):
    for name in (("trainer", "plain") if i % 2 else ("plain", "trainer")):
        started = time.perf_counter()
        ways[name].step(ids, target) if name == "trainer" else plain_step(ways[name], ids, target)
        if i:  # the first step of each warms up
            seconds[name].append(time.perf_counter() - started)
med = {name: statistics.median(s) for name, s in seconds.items()}
print(f"median seconds per step over {a.steps}: trainer {med['trainer']:.2f}, plain formula {med['plain']:.2f}; "
      f"ratio {med['plain'] / med['trainer']:.2f}x ({4 * 256 / med['trainer']:.0f} vs {4 * 256 / med['plain']:.0f} tokens/s)")
