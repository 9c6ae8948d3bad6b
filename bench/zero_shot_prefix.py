"""Bench: zero-shot scoring with the contexts' shared prefix run once against running it in every row.

SmolLM2-135M-Instruct on the items notebook 04 scores (ARC-Easy, PIQA, HellaSwag, 50 each, seed 0, inside
the chat template, whose system turn and user-turn start every context shares). Both ways run in one
process, one after the other and then again in the other order, on the same machine: prints the seconds
of each, the ratio, and the largest difference of any choice's log-likelihood (float rounding only).
A ratio, not a timed assertion.

    python bench/zero_shot_prefix.py [--limit 50]
"""

from __future__ import annotations

import argparse
import time

import torch

from frankenllama.eval.tasks import load_task, subsample_indices
from frankenllama.eval.zero_shot import score_docs
from frankenllama.stages.common import shared_model

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--limit", type=int, default=50, help="items per task")
a = p.parse_args()
torch.set_num_threads(2)
model, tokenizer = shared_model("smollm2-135m")
docs = []
for name in ("arc_easy", "piqa", "hellaswag"):
    task = load_task(name)
    docs += [task.docs[i] for i in subsample_indices(len(task.docs), a.limit, 0)]

seconds: dict[bool, float] = {True: 0.0, False: 0.0}
scores: dict[bool, list[list[float]]] = {}
for share in (True, False, False, True):  # each way first once: neither gets a warm start alone
    started = time.perf_counter()
    scores[share] = score_docs(model, tokenizer, docs, chat_template=True, share_prefix=share)
    seconds[share] += time.perf_counter() - started
diff = max(abs(x - y) for rx, ry in zip(scores[True], scores[False]) for x, y in zip(rx, ry))
print(f"{len(docs)} items, twice each way: prefix in every row {seconds[False]:.1f} s, shared prefix {seconds[True]:.1f} s, "
      f"ratio {seconds[False] / seconds[True]:.2f}x; largest log-likelihood difference {diff:.2e} nats")
