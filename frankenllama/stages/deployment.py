"""Notebook 06's stage: depth pruning × quantization, measured where such models are deployed (llama.cpp).

For each removal (k whole blocks: notebook 02's best whole-block strategy at each k, see
``with_best_cuts``; or the same number of sub-blocks' worth, chosen by the caller), unhealed and
healed, and each GGUF storage type, the stage exports the model (``frankenllama.export.export_gguf``)
and measures in llama.cpp. The healed row at k is one of:

- ``recipe``: the FrankenLLaMA recipe at k blocks' worth, its own selection and healing, exactly as
  notebook 05 runs it (``frankenllama.stages.recipe.run_pipelines``: the variant notebook 05 saved
  is read back, so the chain heals nothing twice) — what ``python -m frankenllama compress`` makes,
  at notebook 05's budget;
- ``healing``: each k's cut of ``removals`` healed with one recipe by the healing stage
  (``frankenllama.stages.healing``; saved as variants ``<prefix>-k<k>-<recipe>``, so a re-run reads them).

Measured per file:

- ``file_bytes``: the GGUF file's size;
- ``peak_rss_bytes``: the peak resident set of a fresh process that loads the file, prefills
  ``prompt_tokens`` and decodes ``decode_tokens`` (``frankenllama.export.probe``), and
  ``model_rss_bytes``: that peak minus the same process's peak before loading;
- ``prefill_tok_s`` / ``decode_tok_s``: the best of ``repeats`` rounds (like ``timeit``'s minimum
  time: interference from other processes only ever slows a run down); within a round every
  combination runs once, in order, so slow drift of a shared CPU hits all alike (side by side,
  interleaved, one run); ``threads`` llama.cpp threads;
- ``ppl``: held-out perplexity from llama.cpp's logits on ``data`` (in-domain: the corpus's eval
  split; blocks scored independently), ``ppl_ood`` on ``ood_data`` (out-of-domain: olmo-passages);
- ``kl`` / ``top1`` (and ``kl_ood`` / ``top1_ood``): mean KL(original ‖ variant) per position and
  top-1 agreement with the original model's f16 GGUF logits on the same blocks;
- ``nll_blocks`` / ``nll_blocks_ood``: each block's mean next-token NLL, for paired comparisons of
  two rows on the same blocks (``frankenllama.export.budget.budget_summary``).

Rows also carry what a KV cache needs (``kv_layers``: blocks with attention, ``n_kv_heads``,
``head_dim``), so ``frankenllama.export.budget.best_under_memory`` can add the cache for a context.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from frankenllama.cache import cached_json, seed_everything
from frankenllama.export import llamacpp, probe
from frankenllama.export.gguf import QTYPES, export_gguf, layer_shapes
from frankenllama.models import DEFAULT_MODEL, decoder_layers, load_model, load_tokenizer, model_folder
from frankenllama.stages.common import DataConfig
from frankenllama.stages.healing import HealingStageConfig, healing_stage
from frankenllama.stages.pruning import best_strategies
from frankenllama.stages.recipe import OURS, RecipeStudyConfig, run_pipelines
from frankenllama.sublayer import prune_sublayers
from frankenllama.surgery import drop_layers
from frankenllama.variants import variant_path

# the export modules that write and run the files (not the command lines, the budget verb or mergekit: a help
# string or the budget reader changes no deployed model)
EXPORT_CODE = ("frankenllama.export.gguf", "frankenllama.export.vocab", "frankenllama.export.llamacpp",
               "frankenllama.export.probe")
CODE = (*EXPORT_CODE, "frankenllama.sublayer", "frankenllama.surgery", "frankenllama.data",
        "frankenllama.models", "frankenllama.loss", "frankenllama.healing", "frankenllama.stages.healing",
        "frankenllama.selection", "frankenllama.budget", "frankenllama.stages.pruning", "frankenllama.stages.recipe",
        "frankenllama.stages.deployment")  # what computes the cached result (healing / the recipe: the healed rows)
GRANULARITIES = ("layer", "sublayer")
LIST_COLUMNS = ("removed_blocks", "removed_sublayers", "nll_blocks", "nll_blocks_ood")  # not table cells


def _frozen(mapping: Any, value) -> tuple[tuple[int, Any], ...]:
    items = mapping.items() if isinstance(mapping, dict) else mapping
    return tuple(sorted((int(k), value(v)) for k, v in items))


def _frozen_removals(removals: Any) -> tuple[tuple[int, tuple[int, ...]], ...]:
    return _frozen(removals, lambda units: tuple(sorted(int(u) for u in units)))


@dataclass(frozen=True)
class DeploymentConfig:
    """What the deployment study measures; dicts ``removals`` / ``strategies`` are frozen to sorted pairs.

    ``prune_ks``: the k's whose cuts ``with_best_cuts`` takes from the pruning stage (the stage refuses
    to run while one is missing from ``removals``). The healed rows, at most one source: ``recipe``,
    notebook 05's config, whose FrankenLLaMA recipe at each k of ``removals`` is the healed model
    (its own cut, often sub-blocks); or ``healing``, the healing stage's config with exactly one
    recipe, which heals ``removals``' cuts (its ``variant_prefix`` names the variants
    ``<prefix>-k<k>-<recipe>``). Neither: no healed rows.
    """

    model: str = DEFAULT_MODEL
    removals: Any = ()  # {k: original block ids (layer) or sub-block ids 2ℓ / 2ℓ+1 (sublayer)}, k = 0 implied
    granularity: str = "layer"  # what the ids of `removals` are
    strategies: Any = ()  # {k: the strategy that chose removals[k]} (a label of the rows)
    prune_ks: tuple[int, ...] = ()
    qtypes: tuple[str, ...] = ("f16", "q8_0", "q4_0")
    healing: HealingStageConfig | None = None
    recipe: RecipeStudyConfig | None = None
    data: DataConfig = field(default_factory=lambda: DataConfig(split="eval", block_len=128, n_blocks=8))
    ood_data: DataConfig | None = field(default_factory=lambda: DataConfig("olmo-passages", "eval", 128, 4))
    prompt_tokens: int = 128
    decode_tokens: int = 32
    repeats: int = 2
    threads: int = 2  # llama.cpp threads of the speed runs
    eval_threads: int = 1  # llama.cpp threads of the logits runs: spinning threads collapse on a busy CPU
    pre_tokenizer: str | None = None  # llama.cpp pre-tokenizer name when the tokenizer's is not recognised
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "removals", _frozen_removals(self.removals))
        object.__setattr__(self, "strategies", _frozen(self.strategies, str))
        object.__setattr__(self, "qtypes", tuple(self.qtypes))
        object.__setattr__(self, "prune_ks", tuple(int(k) for k in self.prune_ks))
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
        if any(k < 1 for k in self.prune_ks):
            raise ValueError(f"prune_ks must be positive block counts, got {self.prune_ks}")
        h = self.healing
        if h is not None and self.recipe is not None:
            raise ValueError("the healed rows come from the recipe (notebook 05's models) or from the healing "
                             "stage's recipe on these cuts, not both: set recipe or healing to None")
        if h is not None and (len(h.recipes) != 1 or h.variant_prefix is None or self.granularity != "layer"):
            raise ValueError("healing needs one recipe, a variant_prefix and whole-block removals "
                             f"(got recipes {h.recipes}, prefix {h.variant_prefix!r}, "
                             f"granularity {self.granularity!r}); "
                             "set healing to None for no healed rows")

    @property
    def ks(self) -> list[int]:
        return sorted({0} | {k for k, _ in self.removals})

    def healed_variant(self, k: int) -> str:
        """The variant name of k's healed cut: ``<healing.variant_prefix>-k<k>-<recipe>``."""
        assert self.healing is not None
        return f"{self.healing.variant_prefix}-k{k}-{self.healing.recipes[0]}"


def with_best_cuts(config: DeploymentConfig, curves: pd.DataFrame) -> DeploymentConfig:
    """``config`` with ``removals`` and ``strategies`` at each of its ``prune_ks`` set to the best whole-block cut.

    ``curves``: the pruning stage's table (``pruning_stage(profile.pruning)``, or notebook 02's
    written ``pruning_curve.csv`` read with ``read_pruning_curves``); the cut at k is the layer strategy
    of lowest eval perplexity (``best_strategies``, as ``best_selection`` hands notebook 03).
    """
    best = best_strategies(curves, "layer").set_index("k")
    missing = [k for k in config.prune_ks if k not in best.index]
    if missing:
        raise ValueError(f"the pruning curves have no whole-block strategy at k = {missing}; "
                         f"measure them in notebook 02 (pruning.ks) or change deployment.prune_ks")
    removals = {k: [int(i) for i in best.loc[k, "layers"]] for k in config.prune_ks}
    return dataclasses.replace(config, removals=removals, granularity="layer",
                               strategies={k: best.loc[k, "strategy"] for k in config.prune_ks})


def read_pruning_curves(path: str | Path) -> pd.DataFrame:
    """Notebook 02's ``pruning_curve.csv`` as the pruning stage's table (block ids back to lists)."""
    curves = pd.read_csv(path, keep_default_na=False)
    curves["layers"] = [[int(i) for i in str(v).replace(",", " ").strip("[] ").split()] for v in curves["layers"]]
    return curves


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


def heal_cuts(config: DeploymentConfig) -> dict[int, tuple[Path, str]]:
    """The healed model of each k > 0 of ``removals``: its variant folder and the strategy that chose its cut.

    ``config.recipe``: the FrankenLLaMA recipe at k blocks' worth (notebook 05's saved variant, or
    computed as notebook 05 would). ``config.healing``: k's cut of ``removals`` healed with its one
    recipe (the healing stage). Either way a saved variant with the same run fingerprint is read, not
    retrained.
    """
    ks = tuple(k for k, _ in config.removals if k > 0)
    if config.recipe is not None:
        return {r["k"]: (variant_path(r["variant"]), r["strategy"]) for r in run_pipelines(config.recipe, ks, (OURS,))}
    if config.healing is None:
        return {}
    strategies = dict(config.strategies)
    folders = {}
    for k, units in config.removals:
        if k == 0:
            continue
        heal = dataclasses.replace(config.healing, model=config.model,
                                   variant_prefix=f"{config.healing.variant_prefix}-k{k}")
        healing_stage(heal, units, strategies.get(k, "given"))
        folders[k] = (variant_path(config.healed_variant(k)), strategies.get(k, "given"))
    return folders


def export_all(config: DeploymentConfig, folder: Path, healed: dict[int, tuple[Path, str]]) -> list[dict[str, Any]]:
    """Export every (removal, healed?, qtype) combination into ``folder``; one row per file, no measurements yet."""
    model, _ = load_model(config.model, dtype=torch.float32, device="cpu")
    removals, strategies = dict(config.removals), dict(config.strategies)
    variants = [(f"k={k}", k, False, strategies.get(k, "none" if k == 0 else "given"),
                 lambda k=k: pruned(model, removals.get(k, ()), config.granularity)) for k in config.ks]
    variants += [(f"k={k} healed", k, True, strategy, lambda f=f: load_model(f, dtype=torch.float32, device="cpu")[0])
                 for k, (f, strategy) in sorted(healed.items())]
    n_blocks = len(decoder_layers(model))
    rows = []
    for label, k, is_healed, strategy, make in variants:
        variant = make()
        for qtype in config.qtypes:
            path = folder / f"{label.replace('=', '').replace(' ', '-')}-{qtype}.gguf"
            summary = export_gguf(variant, path, qtype, folder=config.model, pre_tokenizer=config.pre_tokenizer)
            rows.append({"variant": label, "k": k, "removed_pct": round(100 * k / n_blocks, 1), "healed": is_healed,
                         "strategy": strategy, "qtype": qtype,
                         "arch": summary["arch"], "removed_blocks": summary["removed_blocks"],
                         "removed_sublayers": summary["removed_sublayers"], "file_bytes": summary["bytes"],
                         "path": str(path), **_kv_shape(variant)})
        del variant
    return rows


def _fidelity_on(rows: list[dict[str, Any]], config: DeploymentConfig, data: DataConfig, reference_path: Path,
                 suffix: str) -> None:
    """Add ``ppl``, ``kl``, ``top1`` and ``nll_blocks`` (+ ``suffix``) on ``data``'s blocks to each row."""
    blocks = data.blocks(load_tokenizer(model_folder(config.model)))  # (N, T)
    llm = llamacpp.open_gguf(reference_path, n_ctx=blocks.shape[1], n_threads=config.eval_threads)
    reference = torch.from_numpy(llamacpp.block_logits(llm, blocks))  # (N, T, V)
    del llm
    for row in rows:
        llm = llamacpp.open_gguf(row["path"], n_ctx=blocks.shape[1], n_threads=config.eval_threads)
        logits = llamacpp.block_logits(llm, blocks)
        del llm
        fit = llamacpp.agreement(reference, logits)
        nll = llamacpp.nll_from_logits(logits, blocks)  # (N, T-1)
        row.update({f"ppl{suffix}": float(nll.mean().exp()), f"kl{suffix}": fit["kl"], f"top1{suffix}": fit["top1"],
                    f"nll_blocks{suffix}": nll.mean(dim=1).tolist()})
    print(f"fidelity on {tuple(blocks.shape)} {data.corpus} {data.split} blocks done", file=sys.stderr)


def measure_fidelity(rows: list[dict[str, Any]], config: DeploymentConfig, folder: Path) -> None:
    """Add ``ppl``, ``kl``, ``top1`` (vs the original's f16 GGUF) to each row, from llama.cpp's logits;
    the same with suffix ``_ood`` on ``ood_data`` when it is set."""
    same = [r["path"] for r in rows if r["k"] == 0 and not r["healed"] and r["qtype"] == "f16"]
    reference_path = Path(same[0]) if same else folder / "reference-f16.gguf"
    if not same:
        export_gguf(config.model, reference_path, "f16", pre_tokenizer=config.pre_tokenizer)
    _fidelity_on(rows, config, config.data, reference_path, "")
    if config.ood_data is not None:
        _fidelity_on(rows, config, config.ood_data, reference_path, "_ood")


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
    """The size / memory / speed / quality table of every (removal, healed?, qtype) combination (cached).

    One row per combination, in the order k ascending (the healed variants after them, k ascending),
    qtypes as given. Needs ``llama_cpp`` (``pip install llama-cpp-python==0.3.36``).
    """
    missing = [k for k in config.prune_ks if k not in dict(config.removals)]
    if missing:
        raise ValueError(f"no cut at k = {missing} yet: fill them with with_best_cuts(config, pruning_stage(...))")
    if not llamacpp.available():
        raise RuntimeError("the deployment stage runs llama.cpp: pip install llama-cpp-python==0.3.36")

    def compute() -> list[dict[str, Any]]:
        seed_everything(config.seed)
        healed = heal_cuts(config)
        with tempfile.TemporaryDirectory(prefix="frankenllama-gguf-") as tmp:
            rows = export_all(config, Path(tmp), healed)
            print(f"exported {len(rows)} GGUF files", file=sys.stderr)
            measure_fidelity(rows, config, Path(tmp))
            measure_speed(rows, config)
        for row in rows:
            row.pop("path")
        return rows

    return cached_json("deployment", config, compute, seed=config.seed, code=CODE)


def deployment_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The stage's rows as the table notebook 06 writes (``figures/deployment.csv``, read by the budget verb):
    block lists as space-separated ids, per-block NLLs left out."""
    table = pd.DataFrame(rows).drop(columns=[c for c in ("nll_blocks", "nll_blocks_ood") if c in rows[0]])
    for column in ("removed_blocks", "removed_sublayers"):
        if column in table:
            table[column] = [" ".join(str(u) for u in units) for units in table[column]]
    return table
