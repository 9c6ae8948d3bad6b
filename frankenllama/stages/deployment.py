"""Notebook 06's stage: depth pruning × quantization, measured where such models are deployed (llama.cpp).

For each removal (k blocks of the decoder, or the same number of sub-blocks' worth, chosen by the
caller: notebook 02's best strategy) and each GGUF storage type, the stage exports the model
(``frankenllama.export.export_gguf``) and measures in llama.cpp:

- ``file_bytes``: the GGUF file's size;
- ``peak_rss_bytes``: the peak resident set of a fresh process that loads the file, prefills
  ``prompt_tokens`` and decodes ``decode_tokens`` (``frankenllama.export.probe``), and
  ``model_rss_bytes``: that peak minus the same process's peak before loading;
- ``prefill_tok_s`` / ``decode_tok_s``: the best of ``repeats`` rounds (like ``timeit``'s minimum
  time: interference from other processes only ever slows a run down); within a round every
  combination runs once, in order, so slow drift of a shared CPU hits all alike (side by side,
  interleaved, one run); ``threads`` llama.cpp threads;
- ``ppl``: held-out perplexity from llama.cpp's logits on ``data`` (blocks scored independently);
- ``kl`` / ``top1``: mean KL(original ‖ variant) per position and top-1 agreement with the
  original model's f16 GGUF logits on the same blocks.

Rows also carry what a KV cache needs (``kv_layers``: blocks with attention, ``n_kv_heads``,
``head_dim``), so ``frankenllama.export.budget.best_under_memory`` can add the cache for a context.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from frankenllama.cache import cached_json, seed_everything
from frankenllama.export import llamacpp, probe
from frankenllama.export.gguf import QTYPES, export_gguf, layer_shapes
from frankenllama.models import DEFAULT_MODEL, decoder_layers, load_model, load_tokenizer, model_folder
from frankenllama.stages.common import DataConfig
from frankenllama.sublayer import prune_sublayers
from frankenllama.surgery import drop_layers

CODE = ("frankenllama.export", "frankenllama.sublayer", "frankenllama.surgery", "frankenllama.data",
        "frankenllama.models", "frankenllama.loss")  # what computes the cached result
GRANULARITIES = ("layer", "sublayer")


def _frozen_removals(removals: Any) -> tuple[tuple[int, tuple[int, ...]], ...]:
    items = removals.items() if isinstance(removals, dict) else removals
    return tuple(sorted((int(k), tuple(sorted(int(u) for u in units))) for k, units in items))


@dataclass(frozen=True)
class DeploymentConfig:
    """What the deployment study measures; a dict ``removals`` ``{k: units}`` is frozen to sorted pairs."""

    model: str = DEFAULT_MODEL
    removals: Any = ()  # {k: original block ids (layer) or sub-block ids 2ℓ / 2ℓ+1 (sublayer)}, k = 0 implied
    granularity: str = "layer"  # what the ids of `removals` are
    qtypes: tuple[str, ...] = ("f16", "q8_0", "q4_0")
    healed: str | None = None  # folder of a healed variant (notebook 03), measured as an extra row set
    healed_k: int = 6  # the k the healed variant was pruned at (its label)
    data: DataConfig = field(default_factory=lambda: DataConfig(split="eval", block_len=128, n_blocks=8))
    prompt_tokens: int = 128
    decode_tokens: int = 32
    repeats: int = 2
    threads: int = 2  # llama.cpp threads of the speed runs
    eval_threads: int = 1  # llama.cpp threads of the logits runs: spinning threads collapse on a busy CPU
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "removals", _frozen_removals(self.removals))
        object.__setattr__(self, "qtypes", tuple(self.qtypes))
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        bad = [q for q in self.qtypes if q not in QTYPES]
        if bad or not self.qtypes:
            raise ValueError(f"qtypes {bad or '()'} unknown or empty: choose from {list(QTYPES)}")
        per_k = 2 if self.granularity == "sublayer" else 1
        wrong = [k for k, units in self.removals if k < 0 or len(units) != per_k * k]
        if wrong:
            raise ValueError(f"removals at k = {wrong} do not hold {per_k}·k {self.granularity} ids")
        if min(self.prompt_tokens, self.decode_tokens, self.repeats, self.threads, self.eval_threads) < 1:
            raise ValueError("prompt_tokens, decode_tokens, repeats, threads and eval_threads must be positive")
        if self.healed is not None and not (Path(self.healed) / "config.json").is_file():
            raise ValueError(f"healed variant {self.healed} is not a model folder (no config.json)")

    @property
    def ks(self) -> list[int]:
        return sorted({0} | {k for k, _ in self.removals})


def pruned(model: torch.nn.Module, units: tuple[int, ...], granularity: str) -> torch.nn.Module:
    """The model with ``units`` removed (original ids); the unpruned model itself when there are none."""
    if not units:
        return model
    return drop_layers(model, units) if granularity == "layer" else prune_sublayers(model, units)


def _kv_shape(model: torch.nn.Module) -> dict[str, int]:
    shapes = layer_shapes(model)
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {"kv_layers": sum(1 for s in shapes if s.n_head), "n_kv_heads": config.num_key_value_heads,
            "head_dim": head_dim, "n_blocks": len(decoder_layers(model))}


def export_all(config: DeploymentConfig, folder: Path) -> list[dict[str, Any]]:
    """Export every (removal, qtype) combination into ``folder``; one row per file, no measurements yet."""
    model, _ = load_model(config.model, dtype=torch.float32, device="cpu")
    variants = [(f"k={k}", k, False, pruned(model, dict(config.removals).get(k, ()), config.granularity))
                for k in config.ks]
    if config.healed is not None:
        healed, _ = load_model(config.healed, dtype=torch.float32, device="cpu")
        variants.append((f"k={config.healed_k} healed", config.healed_k, True, healed))
    rows = []
    for label, k, is_healed, variant in variants:
        for qtype in config.qtypes:
            path = folder / f"{label.replace('=', '').replace(' ', '-')}-{qtype}.gguf"
            summary = export_gguf(variant, path, qtype, folder=config.model)
            rows.append({"variant": label, "k": k, "healed": is_healed, "qtype": qtype, "arch": summary["arch"],
                         "removed_blocks": summary["removed_blocks"], "removed_sublayers": summary["removed_sublayers"],
                         "file_bytes": summary["bytes"], "path": str(path), **_kv_shape(variant)})
    return rows


def measure_fidelity(rows: list[dict[str, Any]], config: DeploymentConfig, folder: Path) -> None:
    """Add ``ppl``, ``kl`` and ``top1`` (vs the original's f16 GGUF) to each row, from llama.cpp's logits."""
    blocks = config.data.blocks(load_tokenizer(model_folder(config.model)))  # (N, T)
    same = [r["path"] for r in rows if r["k"] == 0 and not r["healed"] and r["qtype"] == "f16"]
    reference_path = Path(same[0]) if same else folder / "reference-f16.gguf"
    if not same:
        export_gguf(config.model, reference_path, "f16")
    llm = llamacpp.open_gguf(reference_path, n_ctx=blocks.shape[1], n_threads=config.eval_threads)
    reference = torch.from_numpy(llamacpp.block_logits(llm, blocks))  # (N, T, V)
    del llm
    for row in rows:
        llm = llamacpp.open_gguf(row["path"], n_ctx=blocks.shape[1], n_threads=config.eval_threads)
        logits = llamacpp.block_logits(llm, blocks)
        del llm
        fit = llamacpp.agreement(reference, logits)
        row.update(ppl=llamacpp.perplexity_from_logits(logits, blocks), kl=fit["kl"], top1=fit["top1"])
    print(f"fidelity on {tuple(blocks.shape)} eval blocks done", file=sys.stderr)


def run_probe(path: str, config: DeploymentConfig) -> dict[str, float]:
    """One ``frankenllama.export.probe`` run of ``path`` in a fresh process."""
    # run as a plain script: `-m frankenllama.export.probe` would import the package (torch, transformers)
    # into the measured process and inflate its baseline
    command = [sys.executable, str(Path(probe.__file__)), path, "--prompt", str(config.prompt_tokens),
               "--decode", str(config.decode_tokens), "--threads", str(config.threads),
               "--ctx", str(config.prompt_tokens + config.decode_tokens + 8)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"llama.cpp probe of {path} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_speed(rows: list[dict[str, Any]], config: DeploymentConfig) -> None:
    """Add speed and peak RSS: ``repeats`` rounds, each running every row once (interleaved), best kept."""
    runs: list[list[dict[str, float]]] = [[] for _ in rows]
    for round_ in range(config.repeats):
        for i, row in enumerate(rows):
            runs[i].append(run_probe(row["path"], config))
        print(f"speed round {round_ + 1}/{config.repeats} done", file=sys.stderr)
    for row, measured in zip(rows, runs):
        for key in ("prefill_tok_s", "decode_tok_s"):
            row[key] = max(m[key] for m in measured)
        row["load_s"] = min(m["load_s"] for m in measured)
        row["peak_rss_bytes"] = max(m["peak_rss_bytes"] for m in measured)
        row["model_rss_bytes"] = max(m["peak_rss_bytes"] - m["baseline_rss_bytes"] for m in measured)


def deployment_stage(config: DeploymentConfig) -> list[dict[str, Any]]:
    """The size / memory / speed / quality table of every (removal, qtype) combination (cached).

    One row per combination, in the order k ascending (the healed variant last), qtypes as given.
    Needs ``llama_cpp`` (``pip install llama-cpp-python==0.3.36``).
    """
    if not llamacpp.available():
        raise RuntimeError("the deployment stage runs llama.cpp: pip install llama-cpp-python==0.3.36")

    def compute() -> list[dict[str, Any]]:
        seed_everything(config.seed)
        with tempfile.TemporaryDirectory(prefix="frankenllama-gguf-") as tmp:
            rows = export_all(config, Path(tmp))
            print(f"exported {len(rows)} GGUF files", file=sys.stderr)
            measure_fidelity(rows, config, Path(tmp))
            measure_speed(rows, config)
        for row in rows:
            row.pop("path")
        return rows

    return cached_json("deployment", config, compute, seed=config.seed, code=CODE)
