"""Cost of the one-pass similarity statistics relative to a plain forward over the same tokens.

Runs, interleaved and repeated on the real model: (a) ``layer_similarity`` (decoder trunk + hooks +
statistics), (b) a plain ``model(input_ids)`` forward (trunk + LM head), (c) a trunk-only forward
``model.model(input_ids)``. Prints the median times and the ratios a/b (goal ≤ 1.15) and a/c (the
cost of hooks and statistics alone).

    .venv/bin/python bench/similarity_overhead.py [--blocks 16] [--block-len 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from frankenllama import layer_similarity, load_model
from frankenllama.data import load_corpus, token_blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--blocks", type=int, default=16)
    parser.add_argument("--block-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model, tokenizer = load_model(args.model)
    ids = token_blocks(tokenizer, load_corpus("wiki-leads", "calib"), args.block_len, max_blocks=args.blocks)
    batches = ids.split(args.batch_size)

    @torch.inference_mode()
    def plain():
        for b in batches:
            model(input_ids=b)

    @torch.inference_mode()
    def trunk():
        for b in batches:
            model.model(input_ids=b)

    def similarity():
        layer_similarity(model, ids, batch_size=args.batch_size)

    runs = {"similarity": similarity, "plain forward": plain, "trunk forward": trunk}
    times: dict[str, list[float]] = {name: [] for name in runs}
    similarity()  # warm-up
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{ids.numel()} tokens ({args.blocks} x {args.block_len}), batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, {args.repeats} interleaved repeats")
    for name, t in med.items():
        print(f"  {name:14s} median {t:6.2f} s  (min {min(times[name]):.2f}, max {max(times[name]):.2f})")
    print(f"ratio similarity / plain forward: {med['similarity'] / med['plain forward']:.3f}  (goal <= 1.15)")
    print(f"ratio similarity / trunk forward: {med['similarity'] / med['trunk forward']:.3f}  (hooks + statistics alone)")


if __name__ == "__main__":
    main()
