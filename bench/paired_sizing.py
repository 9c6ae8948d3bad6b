"""How many zero-shot items a paired comparison needs (not a speed benchmark).

Scores the original model and a depth-pruned copy (``drop_layers``, by default blocks 13–18 of
SmolLM2: the unhealed k = 6 angular-block cut) on the same ``--limit`` items per task, and prints
for every per-item metric (acc_norm, gold_bpb, gold_prob, gold_prob_norm) the paired difference
with its 95 % bootstrap interval (``frankenllama.eval.paired``) and the number of items at which
the half-width would be one third of the pruned model's loss,
``n ≈ n_now × (half_width / (|loss| / 3))²`` (the half-width shrinks as 1/√n). Also prints
perplexity on the eval splits of ``wiki-leads`` and the out-of-domain ``olmo-passages``.

    .venv/bin/python bench/paired_sizing.py [--tasks hellaswag] [--limit 200] [--drop 13 14 15 16 17 18]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from frankenllama.data import load_corpus, token_blocks
from frankenllama.eval.paired import paired_difference
from frankenllama.eval.perplexity import perplexity
from frankenllama.eval.zero_shot import evaluate_tasks
from frankenllama.models import DEFAULT_MODEL, load_model
from frankenllama.surgery import drop_layers

METRICS = ("acc_norm", "gold_bpb", "gold_prob", "gold_prob_norm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tasks", nargs="+", default=["hellaswag"])
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drop", type=int, nargs="+", default=list(range(13, 19)))
    parser.add_argument("--no-chat", action="store_true")
    parser.add_argument("--ppl-blocks", type=int, default=8)
    args = parser.parse_args()
    start = time.perf_counter()
    model, tokenizer = load_model(args.model)
    pruned = drop_layers(model, args.drop)
    runs = {
        name: evaluate_tasks(m, tokenizer, args.tasks, args.limit, args.seed, chat_template=not args.no_chat)
        for name, m in (("original", model), ("pruned", pruned))
    }
    print(f"{args.model} vs blocks {args.drop} dropped, chat template {not args.no_chat}")
    print(f"{'task':<10} {'metric':<15} {'original':>9} {'pruned':>9} {'diff':>9} {'95% CI':>21} {'n':>5} {'n for hw<=|d|/3':>16}")
    for task in args.tasks:
        for metric in METRICS:
            x = np.array([getattr(r, metric) for r in runs["pruned"][task].items])
            y = np.array([getattr(r, metric) for r in runs["original"][task].items])
            d = paired_difference(x, y, n_boot=5000, seed=args.seed)
            need = math.ceil(d.n * (d.half_width / (abs(d.diff) / 3)) ** 2) if d.diff else math.inf
            print(f"{task:<10} {metric:<15} {d.mean_y:9.4f} {d.mean_x:9.4f} {d.diff:+9.4f} "
                  f"[{d.low:+9.4f}, {d.high:+9.4f}] {d.n:5d} {need:16}")
    for corpus in ("wiki-leads", "olmo-passages"):
        ids = token_blocks(tokenizer, load_corpus(corpus, "eval"), 256, max_blocks=args.ppl_blocks)  # (N, T)
        with torch.no_grad():
            p0, p1 = perplexity(model, ids), perplexity(pruned, ids)
        print(f"perplexity {corpus:<14} original {p0:8.2f}  pruned {p1:8.2f}  ratio {p1 / p0:.2f}")
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
