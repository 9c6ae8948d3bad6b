"""Benchmark: the iterative greedy search (SLEB) with and without the cached residual stream.

The naive search evaluates every candidate with a full forward pass of the model with that block
removed (blocks dropped from the model without copying, logits and cross-entropy as in
``frankenllama.eval.perplexity``). The cached search starts each candidate from the stored residual
stream entering its block and runs only the blocks after it, the final norm and the LM head, and
after each step refreshes only the streams after the removed block. Both are exact; the script
checks that they choose the same blocks and prints the measured speed-up, side by side on the real
model (each search run ``--repeats`` times alternately; the fastest run of each counts).

Prefix reuse alone is bounded below 2×: the blocks run per step fall from L(L−1) to L(L−1)/2, but
every candidate still pays the LM head (for SmolLM2, 49k × 576, about the cost of 4 blocks). The
third run adds an exact bound (the workbook's default): candidates are tried most promising first,
and one is abandoned as soon as its total NLL is sure to exceed the best complete total of the
step. The test is a lower bound from the LM-head rows of ~4k tokens only (logsumexp over a subset
of the vocabulary never exceeds logsumexp over all of it), so most candidates never pay the full
head, and nothing that could win is cut. The fourth adds what the previous step already knows:
after the first step only the ``--shortlist`` candidates that were best at the previous step are
re-scored (the workbook's notebook default). That one is an approximation, so the script checks
its choices against the exact naive search as well.

    .venv/bin/python bench/iterative_search.py [--blocks 8] [--block-len 128] [--steps 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from frankenllama.data import load_corpus, token_blocks
from frankenllama.models import DEFAULT_MODEL, load_model, num_layers
from frankenllama.scoring import greedy_removal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="registry name, folder or GGUF file")
    parser.add_argument("--blocks", type=int, default=8, help="calibration blocks")
    parser.add_argument("--block-len", type=int, default=128, help="tokens per calibration block")
    parser.add_argument("--steps", type=int, default=2, help="blocks the search removes")
    parser.add_argument("--batch-size", type=int, default=1, help="blocks per forward pass (the bound checks after each)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each search")
    parser.add_argument("--shortlist", type=int, default=8, help="candidates re-scored per step in the third run (0: skip it)")
    args = parser.parse_args()

    model, tokenizer = load_model(args.model, device="cpu")
    ids = token_blocks(tokenizer, load_corpus("wiki-leads", "calib"), args.block_len, max_blocks=args.blocks)
    L = num_layers(model)
    print(f"{args.model}: {L} layers; {ids.shape[0]} calib blocks x {ids.shape[1]} tokens; {args.steps} greedy steps; "
          f"{torch.get_num_threads()} threads")
    runs = [("naive", False, False, None), ("cached", True, False, None), ("bounded", True, True, None)]
    if args.shortlist:
        runs.append(("shortlist", True, True, args.shortlist))
    times: dict[str, list[float]] = {name: [] for name, *_ in runs}
    results = {}
    for _ in range(args.repeats):
        for name, cached, bounded, shortlist in runs:
            start = time.perf_counter()
            results[name] = greedy_removal(model, ids, args.steps, batch_size=args.batch_size, cached=cached,
                                           bounded=bounded, shortlist=shortlist)
            times[name].append(time.perf_counter() - start)
    naive, cached, bounded = results["naive"], results["cached"], results["bounded"]
    same = naive.order == cached.order == bounded.order
    # Work in block-forwards (the LM head counted as one more block): naive = (L_t + 1) per candidate,
    # cached = (blocks after the candidate + 1) plus one refresh of the streams after the chosen block.
    naive_work, cached_work = L + 1, L + 1  # the unpruned loss; the first capture of the streams
    removed: list[int] = []
    for chosen in cached.order:
        alive = [l for l in range(L) if l not in removed]
        naive_work += len(alive) * len(alive)  # each candidate: L_t - 1 blocks + head
        cached_work += sum(sum(1 for m in alive if m > c) + 1 for c in alive) + sum(1 for m in alive if m > chosen)
        removed.append(chosen)
    print(f"naive  search: {min(times['naive']):7.1f} s   chose {naive.order}   mean NLL after each step {[round(v, 4) for v in naive.nll]}")
    print(f"cached search: {min(times['cached']):7.1f} s   chose {cached.order}   mean NLL after each step {[round(v, 4) for v in cached.nll]}")
    print(f"cached + bound: {min(times['bounded']):7.1f} s   chose {bounded.order}   "
          f"candidates abandoned per step {bounded.abandoned} of {bounded.evaluated}")
    print(f"same choices: {same}")
    print(f"speed-up, cache only: {min(times['naive']) / min(times['cached']):.2f}x measured "
          f"({naive_work / cached_work:.2f}x fewer block-forwards counting the head as one block)")
    print(f"speed-up, cache + bound (exact, the default): {min(times['naive']) / min(times['bounded']):.2f}x measured")
    if args.shortlist:
        short = results["shortlist"]
        print(f"cached + shortlist {args.shortlist}: {min(times['shortlist']):7.1f} s   chose {short.order}   "
              f"candidates per step {short.evaluated}")
        print(f"same choices as the exact naive search: {short.order == naive.order}")
        print(f"speed-up with the shortlist: {min(times['naive']) / min(times['shortlist']):.2f}x measured")
    if not same:
        raise SystemExit("the exact searches (naive, cached, cached + bound) chose different blocks")


if __name__ == "__main__":
    main()
