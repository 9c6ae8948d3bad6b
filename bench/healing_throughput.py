"""Training throughput of the healing recipes on the real model, side by side.

Builds one ``RecipeTrainer`` per recipe on its own copy of the pruned model (SmolLM2-135M minus 6
blocks by default) and times optimizer steps on the same ``(batch, seq)`` batches, interleaved in
rotating order so that a slow moment of a shared machine hits every recipe alike. Reports the
median seconds per step, tokens/s, the ratio to LoRA, and the goals of issue 4:

* LoRA ≥ 200 tokens/s on 2 CPU cores;
* KD + LoRA costs ≤ 1.4 × LoRA per step. The workbook's default distillation reads the teacher's
  top-k targets, computed once per (teacher, blocks) and shared by every KD run
  (``frankenllama.healing.teacher``); ``kd-lora/online`` (``kd_top_k=0``) runs the teacher inside
  every step with the full-vocabulary KL. The one teacher pass is timed too and reported per step,
  so the cost of a single KD run that has to fill the cache itself is printed beside;
* partial fine-tuning is faster than LoRA (no backward through the frozen prefix).

Usage::

    .venv/bin/python bench/healing_throughput.py                 # seq 256, batch 4, 4 rounds
    .venv/bin/python bench/healing_throughput.py --rounds 8 --recipes lora kd-lora partial kd-full
    python bench/healing_throughput.py --random-init --device cuda   # SmolLM2-shaped random weights

On a shared machine the wall-clock numbers move with the other jobs' load; the CPU seconds per step
(all threads) are printed beside them, and ``tokens/CPU-s × threads`` estimates the rate the same
step would reach with the cores to itself.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from frankenllama.data import load_corpus, token_blocks
from frankenllama.healing import HealConfig, RecipeTrainer
from frankenllama.healing.teacher import teacher_targets
from frankenllama.models import load_model, model_device, resolve_device, resolve_dtype
from frankenllama.surgery import drop_layers

# SmolLM2-135M's shape, for --random-init (throughput only depends on the shape)
SMOLLM2_SHAPE = dict(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
    num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="registry name, folder or GGUF file")
    parser.add_argument("--drop", type=int, nargs="+", default=list(range(13, 19)), help="blocks to remove")
    parser.add_argument("--recipes", nargs="+", default=["lora", "kd-lora", "kd-lora/online", "partial"],
                        help="recipes to time; '<recipe>/online' runs a distillation recipe with kd_top_k=0")
    parser.add_argument("--seq", type=int, default=256, help="tokens per block")
    parser.add_argument("--batch", type=int, default=4, help="blocks per step")
    parser.add_argument("--rounds", type=int, default=4, help="timed steps per recipe (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', …")
    parser.add_argument("--dtype", default="auto", help="'auto' (fp32 on CPU, bf16 on GPU), 'float32', 'bfloat16'")
    parser.add_argument("--random-init", action="store_true", help="SmolLM2-shaped random weights and tokens (no model files)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    n_blocks = args.batch * (args.rounds + 1)
    if args.random_init:
        device = resolve_device(args.device)
        torch.manual_seed(0)
        teacher = LlamaForCausalLM(LlamaConfig(**SMOLLM2_SHAPE)).to(device, resolve_dtype(args.dtype, device)).eval()
        blocks = torch.randint(0, SMOLLM2_SHAPE["vocab_size"], (n_blocks, args.seq))
    else:
        teacher, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
        blocks = token_blocks(tokenizer, load_corpus("wiki-leads", "train"), args.seq, max_blocks=n_blocks)
    student = drop_layers(teacher, args.drop)
    device = model_device(teacher)
    steps = args.rounds + 1
    trainers, targets, teacher_s = {}, {}, {}
    for label in args.recipes:
        recipe, _, mode = label.partition("/")
        extra = {"kd_top_k": 0} if mode == "online" else {}
        config = HealConfig(recipe=recipe, tokens=steps * args.batch * args.seq, batch_size=args.batch, **extra)
        trainers[label] = RecipeTrainer(copy.deepcopy(student), config, steps, teacher=teacher)
        if config.trained_recipe.distill and config.kd_top_k:  # the one teacher pass, timed on its own
            t0 = time.perf_counter()
            targets[label] = teacher_targets(teacher, blocks, config.kd_temperature, config.kd_top_k, batch_size=args.batch)
            teacher_s[label] = (time.perf_counter() - t0) / steps

    times: dict[str, list[float]] = {r: [] for r in trainers}
    cpu: dict[str, list[float]] = {r: [] for r in trainers}
    names = list(trainers)
    for rnd in range(steps):
        ids = blocks[rnd * args.batch : (rnd + 1) * args.batch].to(device)  # (B, T)
        order = names[rnd % len(names) :] + names[: rnd % len(names)]
        for name in order:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            rows = torch.arange(rnd * args.batch, (rnd + 1) * args.batch)
            trainers[name].step(ids, targets[name].rows(rows) if name in targets else None)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if rnd > 0:  # the first step of each recipe is warm-up
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)

    tokens = args.batch * args.seq
    base = statistics.median(times["lora"]) if "lora" in times else None
    rows = []
    print(f"device={device} threads={torch.get_num_threads()} seq={args.seq} batch={args.batch} "
          f"layers={len(student.model.layers)}/{len(teacher.model.layers)} rounds={args.rounds}")  # fmt: skip
    threads = torch.get_num_threads()
    base_cpu = statistics.median(cpu["lora"]) if "lora" in cpu else None
    print(f"{'recipe':<14} {'s/step':>8} {'tokens/s':>9} {'× LoRA':>7} {'CPU-s/step':>10} {'× LoRA':>7} "
          f"{'tok/CPU-s×thr':>13}  (min–max s/step)")  # fmt: skip
    for name, ts in times.items():
        med, cmed = statistics.median(ts), statistics.median(cpu[name])
        ratio = med / base if base else float("nan")
        cratio = cmed / base_cpu if base_cpu else float("nan")
        rows.append({"recipe": name, "s_per_step": med, "tokens_per_s": tokens / med, "cost_vs_lora": ratio,
                     "cpu_s_per_step": cmed, "cpu_cost_vs_lora": cratio, "tokens_per_cpu_s_x_threads": tokens * threads / cmed})  # fmt: skip
        print(f"{name:<14} {med:8.2f} {tokens / med:9.1f} {ratio:7.2f} {cmed:10.2f} {cratio:7.2f} "
              f"{tokens * threads / cmed:13.1f}  ({min(ts):.2f}–{max(ts):.2f})")  # fmt: skip
    by = {r["recipe"]: r for r in rows}
    for name, seconds in teacher_s.items():
        by[name]["teacher_pass_s_per_step"] = seconds
        single = (by[name]["s_per_step"] + seconds) / base if base else float("nan")
        by[name]["single_run_cost_vs_lora"] = single
        print(f"{name}: the one teacher pass costs {seconds:.2f} s per step of blocks (top-{targets[name].top_k}, tail mass "
              f"{targets[name].tail_mass():.3f}); a single KD run that fills the cache itself: {single:.2f} × LoRA; "
              f"kd-lora and kd-full of one notebook share it")
    goals = {}
    if "lora" in by:
        goals["lora >= 200 tok/s"] = by["lora"]["tokens_per_s"] >= 200
    if "kd-lora" in by and base:
        goals["kd-lora <= 1.4 x lora"] = by["kd-lora"]["cost_vs_lora"] <= 1.4
    if "partial" in by and base:
        goals["partial faster than lora"] = by["partial"]["cost_vs_lora"] < 1.0
    for goal, ok in goals.items():
        print(f"goal {goal}: {'met' if ok else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "results": rows, "goals": goals}, fh, indent=2)


if __name__ == "__main__":
    main()
