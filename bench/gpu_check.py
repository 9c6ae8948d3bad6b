"""The GPU path of the workbook (issue 13): run it whenever an accelerator is at hand.

With CUDA, four checks run in order, each timed and reported (a failing one does not stop the
others; the exit status says whether all passed):

1. ``core`` — the core pipeline on CUDA against the CPU, on a model with SmolLM2's architecture and
   random weights built from ``--config`` (a folder with ``config.json`` + tokenizer files): the
   model lands on the GPU in bfloat16, layer similarity on GPU (float32) matches the CPU within
   1e-3, drop_layers keeps the model on the GPU and KV-cached generation equals uncached.
2. ``notebooks`` — the ``smoke`` profile of every notebook (jupytext + papermill, as ``make
   notebook-NN PROFILE=smoke`` runs them), on the GPU the notebooks pick by themselves.
3. ``thesis-eval`` — one ``thesis``-size evaluation: the original model on every item of every task,
   perplexity and fidelity blocks of the ``thesis`` profile (``frankenllama.stages.evaluation``,
   no variants).
4. ``speed-8b`` — prefill and decode tokens/s of an 8B-shaped llama (``tests/data/llama-3.1-8b``,
   random bfloat16 weights: speed does not depend on them) and of the same model with ``--drop``
   blocks removed, interleaved (``frankenllama.eval.efficiency``), with the measured speed-up over
   the ideal ``L / (L − k)``.

Without CUDA it says so and exits 0. ``--dry-run`` runs the CPU side only: it builds the 8B-shaped
model on the meta device (``--layers`` blocks, no memory), prints its and the pruned model's size
and ideal speed-up and the commands the GPU run would execute (tests use it).

    python bench/gpu_check.py --config data/cache/models/smollm2-135m        # all four
    python bench/gpu_check.py --only speed-8b --drop 8
    python bench/gpu_check.py --dry-run --layers 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import init_empty_weights
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIG_8B = ROOT / "tests" / "data" / "llama-3.1-8b" / "config.json"
CHECKS = ("core", "notebooks", "thesis-eval", "speed-8b")


def config_8b(layers: int | None = None) -> LlamaConfig:
    """Llama-3.1-8B's published shape (``tests/data``), with ``layers`` blocks when given."""
    config = LlamaConfig.from_dict(json.loads(CONFIG_8B.read_text()))
    if layers is not None:
        if layers < 2:
            raise ValueError(f"--layers must be at least 2 (one to keep, one to drop), got {layers}")
        config.num_hidden_layers = layers
    return config


def pruned_blocks(layers: int, drop: int) -> list[int]:
    """The ``drop`` consecutive blocks a speed check removes: ending 1 before the last (deep blocks, as the strategies pick)."""
    if not 1 <= drop < layers:
        raise ValueError(f"--drop must be in 1 … {layers - 1} for {layers} blocks, got {drop}")
    end = layers - 1
    return list(range(end - drop, end))


def dry_run(layers: int, drop: int) -> dict[str, float]:
    """The CPU side: the 8B-shaped model on meta, its size and the pruned one's, the GPU commands."""
    from frankenllama.eval.efficiency import ideal_speedup

    config = config_8b(layers)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    removed = pruned_blocks(config.num_hidden_layers, drop)
    per_block = sum(p.numel() for p in model.model.layers[0].parameters())
    full = sum(p.numel() for p in model.parameters())  # parameters() lists a tied one once (data pointers mean nothing on meta)
    out = {"layers": config.num_hidden_layers, "params": full, "params_pruned": full - drop * per_block,
           "bytes_bf16": 2 * full, "ideal_speedup": ideal_speedup(config.num_hidden_layers, config.num_hidden_layers - drop)}
    print(f"8B-shaped llama, {out['layers']} blocks: {full / 1e9:.3f} B parameters ({out['bytes_bf16'] / 2**30:.1f} GiB bf16); "
          f"blocks {removed[0]}–{removed[-1]} removed: {out['params_pruned'] / 1e9:.3f} B, ideal speed-up {out['ideal_speedup']:.3f}")
    for nb in notebooks():
        print("would run:", " ".join(notebook_command(nb, Path("build/gpu_check"))[-1]))
    print("would run: thesis evaluation of the original model (every item of", ", ".join(thesis_tasks()), ")")
    return out


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def notebook_command(notebook: Path, build: Path) -> list[list[str]]:
    """The two commands ``make notebook-NN PROFILE=smoke`` runs for ``notebook`` (convert, execute)."""
    bin_dir = Path(sys.executable).parent
    source, executed = build / f"{notebook.stem}.source.ipynb", build / f"{notebook.stem}.ipynb"
    return [[str(bin_dir / "jupytext"), "--quiet", "--to", "ipynb", "--output", str(source), str(notebook)],
            [str(bin_dir / "papermill"), "--kernel", "frankenllama", "--cwd", "notebooks", "-p", "profile", "smoke",
             str(source), str(executed)]]  # fmt: skip


def thesis_tasks() -> tuple[str, ...]:
    from frankenllama.stages import profiles

    return tuple(profiles.build("thesis").evaluation.tasks.tasks)


def check_notebooks() -> None:
    build = ROOT / "build" / "gpu_check"
    build.mkdir(parents=True, exist_ok=True)
    failed = []
    for nb in notebooks():
        start = time.perf_counter()
        ok = all(subprocess.run(cmd, cwd=ROOT).returncode == 0 for cmd in notebook_command(nb, build))
        print(f"  {nb.stem}: {'ok' if ok else 'FAILED'} in {time.perf_counter() - start:.0f} s")
        failed += [] if ok else [nb.stem]
    if failed:
        raise RuntimeError(f"notebooks failed on the smoke profile: {failed} (executed copies in {build})")


def check_thesis_eval() -> None:
    from frankenllama.stages import profiles
    from frankenllama.stages.evaluation import BASELINE, accuracy_table, evaluation_stage

    config = dataclasses.replace(profiles.build("thesis").evaluation, max_variants=0)
    stage = evaluation_stage(config)
    print(accuracy_table(stage).to_string())
    print(f"  perplexity ({config.corpus} eval, {config.ppl_blocks} x {config.block_len} tokens): "
          f"{stage['results'][BASELINE]['perplexity']:.3f}")


def check_speed_8b(layers: int | None, drop: int) -> None:
    from frankenllama.eval.efficiency import SpeedConfig, compare_efficiency
    from frankenllama.surgery import drop_layers

    config = config_8b(layers)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    pruned = drop_layers(model, pruned_blocks(config.num_hidden_layers, drop))
    table = compare_efficiency({"8B-shaped": model, f"-{drop} blocks": pruned},
                               SpeedConfig((1, 8), prompt_len=512, new_tokens=64, repeats=3, warmup=1))  # fmt: skip
    cols = [c for c in table.columns if c.endswith(("_speedup", "_vs_ideal")) or c.startswith(("prefill_tps", "decode_tps"))]
    print(table[["layers", "params", "peak_memory", *dict.fromkeys(cols)]].T.to_string())


def check_core(config_folder: Path) -> None:
    import numpy as np

    from frankenllama import drop_layers, layer_similarity, load_model, perplexity, select_layers

    folder = Path(tempfile.mkdtemp())
    for f in config_folder.iterdir():
        if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "config.json", "generation_config.json"):
            (folder / f.name).write_bytes(f.read_bytes())
    config = AutoConfig.from_pretrained(folder)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    model, tok = load_model(folder, device="auto")
    assert model.device.type == "cuda" and model.dtype == torch.bfloat16, (model.device, model.dtype)
    ids = torch.randint(0, config.vocab_size, (8, 256), generator=torch.Generator().manual_seed(0))
    sim_gpu = layer_similarity(load_model(folder, dtype="float32", device="cuda")[0], ids)
    sim_cpu = layer_similarity(load_model(folder, dtype="float32", device="cpu")[0], ids)
    diff = float(np.abs(sim_gpu.cosine - sim_cpu.cosine).max())
    print(f"  similarity GPU vs CPU (fp32): max |Δcos| = {diff:.2e}")
    assert diff < 1e-3
    pruned = drop_layers(model, select_layers(sim_gpu, 6, "angular-block"))
    assert next(pruned.parameters()).device.type == "cuda"
    prompt = ids[:1, :16].cuda()
    kw = dict(max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)
    same = torch.equal(pruned.generate(prompt, use_cache=True, **kw), pruned.generate(prompt, use_cache=False, **kw))
    print(f"  generation cache == no cache: {same}; perplexity bf16 full {perplexity(model, ids):.1f}, "
          f"pruned {perplexity(pruned, ids):.1f} (random weights)")
    assert same


def run_checks(checks: dict[str, Callable[[], None]]) -> int:
    """Run each check, timed; print a summary; 0 if all passed."""
    results = {}
    for name, check in checks.items():
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            check()
            results[name] = "ok"
        except Exception:  # one failing check must not hide the others' results
            traceback.print_exc()
            results[name] = "FAILED"
        print(f"== {name}: {results[name]} in {time.perf_counter() - start:.0f} s", flush=True)
    print("GPU CHECK:", ", ".join(f"{k} {v}" for k, v in results.items()))
    return 0 if all(v == "ok" for v in results.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "data" / "cache" / "models" / "smollm2-135m",
                        help="folder with config.json and tokenizer files (the core check)")
    parser.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS))
    parser.add_argument("--layers", type=int, help="blocks of the 8B-shaped model (default: its 32)")
    parser.add_argument("--drop", type=int, default=8, help="blocks removed for the speed check")
    parser.add_argument("--dry-run", action="store_true", help="CPU side only: build the 8B shape on meta, print the plan")
    args = parser.parse_args(argv)
    if args.dry_run:
        dry_run(args.layers or config_8b().num_hidden_layers, args.drop)
        return 0
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible, so the GPU checks cannot run here (nothing was measured). "
              "Run it on a machine with a GPU, or pass --dry-run for the CPU side.")
        return 0
    print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
    checks = {"core": lambda: check_core(args.config), "notebooks": check_notebooks, "thesis-eval": check_thesis_eval,
              "speed-8b": lambda: check_speed_8b(args.layers, args.drop)}  # fmt: skip
    return run_checks({name: checks[name] for name in CHECKS if name in args.only})


if __name__ == "__main__":
    sys.exit(main())
