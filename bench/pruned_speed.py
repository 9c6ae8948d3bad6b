"""Speed of a depth-pruned model against its original, measured side by side in one run.

Loads the model, drops ``--drop`` consecutive blocks (a copy; the original stays in memory), and
times prefill and decode of both, interleaved, at batch 1 and 8; prints tokens/s, the measured
speed-up, the ideal ``L / (L - k)`` and their ratio. Goals on CPU: prefill ≥ 0.95 × ideal, decode
at batch 1 ≥ 0.9 × ideal.

    .venv/bin/python bench/pruned_speed.py                      # SmolLM2-135M, 6 of 30 blocks dropped
    .venv/bin/python bench/pruned_speed.py --decode loop --cache static --threads 2
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from frankenllama.eval.efficiency import SpeedConfig, compare_efficiency
from frankenllama.models import DEFAULT_MODEL, load_model, num_layers
from frankenllama.surgery import drop_layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="registry name, transformers folder or .gguf file")
    parser.add_argument("--drop", type=int, default=6, help="number of blocks to drop")
    parser.add_argument("--first", type=int, default=None, help="first dropped block (default: L - drop - 4)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decode", choices=["generate", "loop"], default="generate")
    parser.add_argument("--cache", choices=["dynamic", "static"], default="dynamic")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads while timing (0: leave as is)")
    parser.add_argument("--statistic", choices=["min", "median"], default="min")
    args = parser.parse_args()

    model, _ = load_model(args.model)
    layers = num_layers(model)
    first = layers - args.drop - 4 if args.first is None else args.first
    pruned = drop_layers(model, range(first, first + args.drop))
    config = SpeedConfig(
        batch_sizes=tuple(args.batch_sizes),
        prompt_len=args.prompt_len,
        new_tokens=args.new_tokens,
        repeats=args.repeats,
        decode=args.decode,
        cache=args.cache,
        threads=args.threads or None,
        statistic=args.statistic,
    )
    start = time.perf_counter()
    table = compare_efficiency({f"original ({layers})": model, f"pruned ({layers - args.drop})": pruned}, config)
    elapsed = time.perf_counter() - start
    pd.set_option("display.width", 160)
    speed = [c for c in table.columns if c.endswith("tps_b1") or c.endswith(tuple(f"tps_b{b}" for b in args.batch_sizes))]
    print(f"config: {config}\nblocks {first}…{first + args.drop - 1} dropped; measured in {elapsed:.0f} s\n")
    print(table[["layers", "params", "bytes_fp32", "bytes_bf16", "peak_memory"]].to_string(), "\n")
    print(table[speed].round(1).to_string(), "\n")
    ideal = table["ideal_speedup"].iloc[1]
    print(f"ideal speed-up L/(L-k) = {layers}/{layers - args.drop} = {ideal:.3f}")
    for col in speed:
        ratio = table[f"{col}_speedup"].iloc[1]
        print(f"{col:>16}: speed-up {ratio:.3f}  = {ratio / ideal:.3f} × ideal")


if __name__ == "__main__":
    main()
