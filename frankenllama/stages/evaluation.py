"""Notebook 04's stage, the final comparison: the unpruned model against every variant in the store.

For each model the stage measures what it kept and lost — zero-shot accuracy on the
``frankenllama.eval.tasks`` benchmarks (scored by ``frankenllama.eval.zero_shot``), held-out
perplexity (``frankenllama.eval.perplexity``), fidelity to the original
(``frankenllama.eval.fidelity``: KL divergence and top-1 agreement) — and what it gained
(``frankenllama.eval.efficiency``: parameters, bytes, memory, prefill and decode speed, all variants
timed side by side with the original in one run). Per-model results are cached under a key made of
the evaluation config and the variant's identity (its provenance record), so adding a variant only
evaluates that one; the speed table and the generations are cached for the exact set of models they
compared. Every cache key also holds the version of ``CODE``: a change to how a number is computed
recomputes it. ``frankenllama.figures.evaluation`` draws the stage's figures.

Depth pruning can leave perplexity almost intact while question-answering accuracy collapses
(Gromov et al. 2024, arXiv:2403.17887), hence the per-task view and "% retained" =
``100 × average accuracy of the variant / average accuracy of the original``.

Perplexity is measured in two domains on the same blocks for every model: **in-domain** (the eval
split of ``corpus``, wiki-leads by default) and **out-of-domain** (the eval split of ``ood_corpus``,
the eval-only ``olmo-passages``: text no stage calibrates or heals on). Each model's result keeps the
mean NLL of every block (``block_nll``, ``block_nll_ood``), so ``paired_perplexity_table`` can give
each model's perplexity ratio to the original with a paired bootstrap interval over blocks.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from torch import nn
from transformers import PreTrainedTokenizerBase

from frankenllama.cache import cached_json, seed_everything
from frankenllama.data import load_corpus, token_blocks
from frankenllama.eval.efficiency import SpeedConfig, compare_efficiency
from frankenllama.eval.paired import mcnemar, paired_difference, retained
from frankenllama.eval.fidelity import DEFAULT_PROMPTS, generations_side_by_side, next_token_fidelity
from frankenllama.eval.perplexity import block_nll
from frankenllama.eval.tasks import DEFAULT_TASKS
from frankenllama.eval.zero_shot import TaskEvalConfig, evaluate_tasks
from frankenllama.models import DEFAULT_MODEL, decoder_layers, load_model, model_folder
from frankenllama.stages.common import shared_model
from frankenllama.stages.pruning import best_selection
from frankenllama.variants import META_FILE, VariantInfo, list_variants

# what computes the cached results: the measurements, the data and model loading, and this module
CODE = ("frankenllama.eval", "frankenllama.data", "frankenllama.models", "frankenllama.sublayer", "frankenllama.stages.evaluation")
BASELINE = "original"


@dataclass(frozen=True)
class EvaluationConfig:
    """Everything the final comparison measures; validated on construction.

    Attributes:
        model: the unpruned reference (registry name, folder or GGUF file).
        tasks: zero-shot task config (tasks, ``limit`` items per task, seed, chat template); ``None``
            skips zero-shot (notebook 05 measures perplexity at every ratio, zero-shot at some).
        corpus: text corpus for perplexity and fidelity (its ``eval`` split): the in-domain text.
        ood_corpus: out-of-domain corpus for a second perplexity (its ``eval`` split; ``None``: skip).
        block_len: tokens per eval block; ``ppl_blocks`` blocks of each domain and ``fidelity_blocks``
            of the in-domain ones are used (``fidelity_blocks = 0``: no fidelity, ``kl`` and
            ``top1_agreement`` are ``None``; notebook 05 shows neither).
        speed: how prefill / decode are timed.
        prompts: prompts of the side-by-side greedy generations; ``max_new_tokens`` each.
        variant_prefix: only variants whose name starts with it (``""``: all) ...
        exclude_prefix: ... and does not start with this one or any of these (``None``: keep all; the
            default leaves out the smoke profile's ``smoke-*`` variants; the profiles also leave out
            notebook 05's ``recipe-*``) ...
        max_variants: ... at most this many, in name order (``None``: all).
        variants: an explicit tuple of variant names to compare, in this order (replaces the three
            selections above; ``None``: select by them). A name missing from the store is an error.
        seed: set at the stage's entry.
    """

    model: str = DEFAULT_MODEL
    tasks: TaskEvalConfig | None = field(default_factory=lambda: TaskEvalConfig(DEFAULT_TASKS, limit=20, chat_template=True))
    corpus: str = "wiki-leads"
    ood_corpus: str | None = "olmo-passages"
    block_len: int = 256
    ppl_blocks: int = 8
    fidelity_blocks: int = 4
    speed: SpeedConfig = field(default_factory=lambda: SpeedConfig(prompt_len=64, new_tokens=16, repeats=3, threads=1))
    prompts: tuple[str, ...] = DEFAULT_PROMPTS[:3]
    max_new_tokens: int = 40
    variant_prefix: str = ""
    exclude_prefix: str | tuple[str, ...] | None = "smoke-"
    max_variants: int | None = None
    variants: tuple[str, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompts", tuple(self.prompts))
        if isinstance(self.exclude_prefix, list):
            object.__setattr__(self, "exclude_prefix", tuple(self.exclude_prefix))
        if isinstance(self.variants, str):
            raise TypeError(f"variants must be a tuple of variant names, e.g. ({self.variants!r},)")
        if self.variants is not None:
            object.__setattr__(self, "variants", tuple(self.variants))
        if self.block_len < 2 or self.ppl_blocks < 1 or self.fidelity_blocks < 0:
            raise ValueError(f"block_len must be >= 2, ppl_blocks >= 1 and fidelity_blocks >= 0 (0: no fidelity), got "
                             f"{self.block_len}, {self.ppl_blocks}, {self.fidelity_blocks}")
        if self.max_variants is not None and self.max_variants < 0:
            raise ValueError(f"max_variants must be >= 0 or None, got {self.max_variants}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")


# EvaluationConfig fields that choose the models or what is measured on all of them at once: not in a model's key
SIDE_BY_SIDE = ("variant_prefix", "exclude_prefix", "max_variants", "variants", "speed", "prompts", "max_new_tokens")


def _identity(info: VariantInfo | None, config: EvaluationConfig) -> dict[str, Any]:
    """What makes a model's results valid: its provenance record (variant) or weight file stamp."""
    if info is None:
        folder = model_folder(config.model)
        stamps = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(folder.glob("*.safetensors"))}
        return {"model": config.model, "weights": stamps}
    record = json.loads((info.path / META_FILE).read_text())
    return {"variant": info.name, "created": record.get("created"), "meta": record.get("meta")}


def variants_to_compare(config: EvaluationConfig) -> list[VariantInfo]:
    """Variants in the store: ``config.variants`` by name, else those ``variant_prefix``,
    ``exclude_prefix`` and ``max_variants`` select."""
    if config.variants is not None:
        stored = {v.name: v for v in list_variants()}
        missing = [name for name in config.variants if name not in stored]
        if missing:
            raise ValueError(f"variants {missing} are not in the store (it holds {sorted(stored)}); run the notebook "
                             "that saves them (02: pruned, 03: healed) or change evaluation.variants")
        return [stored[name] for name in config.variants]
    keep = [
        v for v in list_variants()
        if v.name.startswith(config.variant_prefix) and not (config.exclude_prefix and v.name.startswith(config.exclude_prefix))
    ]  # fmt: skip
    return keep if config.max_variants is None else keep[: config.max_variants]


def _perplexity(model: nn.Module, ids) -> tuple[float, list[float]]:
    """Token-weighted perplexity on ``(N, T)`` blocks and each block's mean NLL (nats)."""
    sums, counts = block_nll(model, ids)
    return math.exp(float(sums.sum()) / int(counts.sum())), (sums / counts).tolist()


def evaluate_model(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    reference: nn.Module,
    config: EvaluationConfig,
    ppl_ids,
    fidelity_ids,
    ood_ids=None,
) -> dict[str, Any]:
    """Accuracy per task, perplexity in and out of domain, and fidelity to ``reference`` of one model (uncached)."""
    t = config.tasks
    tasks = {} if t is None else evaluate_tasks(model, tokenizer, t.tasks, t.limit, t.seed, t.chat_template,
                                                t.batch_size, t.max_batch_tokens)  # fmt: skip
    fid = next_token_fidelity(reference, model, fidelity_ids) if len(fidelity_ids) else None
    ppl, nll = _perplexity(model, ppl_ids)
    ppl_ood, nll_ood = _perplexity(model, ood_ids) if ood_ids is not None else (None, None)
    return {
        "tasks": {name: asdict(r) for name, r in tasks.items()},  # aggregates + per-item records ("items")
        "perplexity": ppl,
        "perplexity_ood": ppl_ood,
        "block_nll": nll,  # mean NLL of each in-domain block, the same blocks for every model
        "block_nll_ood": nll_ood,
        "kl": None if fid is None else fid.kl,
        "top1_agreement": None if fid is None else fid.top1_agreement,
        "layers": len(decoder_layers(model)),
    }


def evaluation_stage(config: EvaluationConfig) -> dict[str, Any]:
    """Evaluate the original and every selected variant (cached per model) and time them together.

    Returns ``{"results": {name: per-model dict}, "speed": table as records, "generations": records,
    "meta": {name: variant meta}}``.
    """
    seed_everything(config.seed)
    reference, tokenizer = shared_model(config.model)
    ppl_ids = token_blocks(tokenizer, load_corpus(config.corpus, "eval"), config.block_len, max_blocks=config.ppl_blocks)  # (N, T)
    ood_ids = None if config.ood_corpus is None else token_blocks(
        tokenizer, load_corpus(config.ood_corpus, "eval"), config.block_len, max_blocks=config.ppl_blocks)  # (N, T)
    fid_ids = ppl_ids[: config.fidelity_blocks]  # (N_fid, T)
    infos = variants_to_compare(config)
    results, metas, loaded = {}, {BASELINE: {}}, {}
    # a model's results depend on how it is measured, not on which models it is compared with, nor on the
    # speed runs and generations done side by side (cached apart): notebook 05's three ratios share the original's
    measured = {k: v for k, v in asdict(config).items() if k not in SIDE_BY_SIDE}
    for info in [None, *infos]:
        name = BASELINE if info is None else info.name
        key = {"evaluation": measured, "identity": _identity(info, config)}

        def compute(info=info, name=name):
            model = reference if info is None else load_model(info.path)[0]
            loaded[name] = model
            return evaluate_model(model, tokenizer, reference, config, ppl_ids, fid_ids, ood_ids)

        results[name] = cached_json("evaluation", key, compute, seed=config.seed, code=CODE)
        if info is not None:
            metas[name] = info.meta
    # the speed table and the generations need every model in memory at once, in the store's order (loaded only
    # when one of them is not cached: a warm re-run reads every result without loading a variant)
    @functools.cache
    def models() -> dict[str, Any]:
        variants = {i.name: loaded[i.name] if i.name in loaded else load_model(i.path)[0] for i in infos}
        return {BASELINE: reference, **variants}

    identities = {BASELINE: _identity(None, config), **{i.name: _identity(i, config) for i in infos}}
    speed_key = {"speed": config.speed, "models": identities}
    speed = cached_json(
        "efficiency", speed_key, lambda: compare_efficiency(models(), config.speed).reset_index(names="model").to_dict("records"),
        code=CODE,
    )  # fmt: skip
    gen_key = {"prompts": config.prompts, "max_new_tokens": config.max_new_tokens, "models": identities}
    generations = cached_json(
        "generations", gen_key,
        lambda: generations_side_by_side(models(), tokenizer, config.prompts, config.max_new_tokens).to_dict("records"),
        code=CODE,
    )  # fmt: skip
    return {"results": results, "speed": speed, "generations": generations, "meta": metas}


# --------------------------------------------------------------------------------------------------
# tables


def accuracy_table(stage: dict[str, Any], metric: str = "acc_norm") -> pd.DataFrame:
    """Per-task accuracy (%) of every model (rows) and their average."""
    if metric not in ("acc", "acc_norm"):
        raise ValueError(f"metric must be 'acc' or 'acc_norm', got {metric!r}")
    rows = {name: {task: 100 * r[metric] for task, r in res["tasks"].items()} for name, res in stage["results"].items()}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["average"] = table.mean(axis=1)
    return table


def comparison_table(stage: dict[str, Any], metric: str = "acc_norm") -> pd.DataFrame:
    """The final table: per-task accuracy, average, % retained, perplexity in and out of domain, KL, size and speed.

    ``ppl_in_domain`` is on the eval split of the stage's ``corpus``, ``ppl_out_of_domain`` on that of
    its ``ood_corpus`` (NaN where it was skipped).
    """
    acc = accuracy_table(stage, metric)
    speed = pd.DataFrame(stage["speed"]).set_index("model")
    table = acc.copy()
    table["retained_%"] = 100 * acc["average"] / acc.loc[BASELINE, "average"]
    for name, res in stage["results"].items():
        table.loc[name, "layers"] = res["layers"]
        table.loc[name, "ppl_in_domain"] = res["perplexity"]
        ood = res.get("perplexity_ood")
        table.loc[name, "ppl_out_of_domain"] = np.nan if ood is None else ood
        table.loc[name, "kl"] = np.nan if res["kl"] is None else res["kl"]
        table.loc[name, "top1_%"] = np.nan if res["top1_agreement"] is None else 100 * res["top1_agreement"]
    table["params_M"] = speed["params"] / 1e6
    table["size_bf16_MB"] = speed["bytes_bf16"] / 2**20
    for col in [c for c in speed.columns if c.startswith(("prefill_tps", "decode_tps")) and c.endswith("_speedup")]:
        table[col.replace("_tps", "").replace("_speedup", "_x")] = speed[col]
    table["ideal_x"] = speed["ideal_speedup"]
    table["decode_ms_b1"] = 1000 / speed["decode_tps_b1"] if "decode_tps_b1" in speed else np.nan
    table.index.name = "model"
    return table


PAIRED_METRICS = ("acc_norm", "acc", "gold_bpb", "gold_prob", "gold_prob_norm")


def _item_arrays(result: dict[str, Any], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-item ``metric``, item ids and task labels of one model's cached results, tasks in order."""
    values, ids, groups = [], [], []
    for task, r in result["tasks"].items():
        items = r.get("items") or []
        if len(items) != r["n"]:
            raise ValueError(f"task {task!r} has no per-item records; re-run the evaluation stage with this code")
        values += [it[metric] for it in items]
        ids += [it["item"] for it in items]
        groups += [task] * len(items)
    return np.asarray(values, dtype=np.float64), np.asarray(ids), np.asarray(groups)


def _scale(metric: str) -> float:
    """Accuracy-type metrics are reported in points (× 100), bits per byte as they are."""
    if metric not in PAIRED_METRICS:
        raise ValueError(f"metric must be one of {PAIRED_METRICS}, got {metric!r}")
    return 1.0 if metric == "gold_bpb" else 100.0


def _aligned(stage: dict[str, Any], name: str, metric: str, baseline: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-item ``metric`` of model ``name`` and of ``baseline`` on the same items, and the items' tasks."""
    y, ids, groups = _item_arrays(stage["results"][baseline], metric)
    x, x_ids, x_groups = _item_arrays(stage["results"][name], metric)
    if not (np.array_equal(ids, x_ids) and np.array_equal(groups, x_groups)):
        raise ValueError(f"{name!r} was scored on other items than {baseline!r}; evaluate both with one config")
    return x, y, groups


def paired_table(
    stage: dict[str, Any], metric: str = "acc_norm", baseline: str = BASELINE, n_boot: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """Every model against ``baseline`` on the same items: the task-average ``metric`` difference.

    Columns: ``diff`` (model − baseline, macro mean over tasks), ``low`` / ``high`` (95 % paired
    bootstrap interval, items resampled within tasks) and its ``half_width``, ``significant`` (interval excludes 0),
    ``retained_%`` with its interval, and for 0/1 metrics the exact McNemar ``p_value`` over all
    items (``frankenllama.eval.paired``). Accuracy-type metrics are in points (× 100).
    """
    scale = _scale(metric)
    rows = {}
    for name in stage["results"]:
        x, y, groups = _aligned(stage, name, metric, baseline)
        d = paired_difference(scale * x, scale * y, groups, n_boot, seed)
        row = {"diff": d.diff, "low": d.low, "high": d.high, "half_width": d.half_width, "significant": d.significant}
        if d.mean_y > 0 and metric != "gold_bpb":
            r = retained(x, y, groups, n_boot, seed)
            row.update({"retained_%": r.percent, "retained_low": r.low, "retained_high": r.high})
        if metric in ("acc", "acc_norm"):
            row["p_value"] = mcnemar(x, y).p_value
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return table


DOMAINS = {"in": "block_nll", "out": "block_nll_ood"}


def paired_perplexity_table(
    stage: dict[str, Any], domain: str = "in", baseline: str = BASELINE, n_boot: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """Every model's perplexity as a multiple of ``baseline``'s on the same blocks of one ``domain``.

    ``domain``: ``"in"`` (the eval split of the stage's ``corpus``) or ``"out"`` (of its
    ``ood_corpus``). Every block has the same number of predictions, so the perplexity ratio is
    ``exp(mean over blocks of the NLL difference)``; its 95 % interval is the paired bootstrap
    interval of that mean over blocks (``frankenllama.eval.paired.paired_difference``, blocks
    resampled jointly for both models), exponentiated. Columns: ``ppl``, ``ppl_ratio``,
    ``ratio_low`` / ``ratio_high``, ``significant`` (interval excludes a ratio of 1) and ``blocks``.
    """
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {tuple(DOMAINS)}, got {domain!r}")
    key = DOMAINS[domain]
    y = stage["results"][baseline].get(key)
    if y is None:
        raise ValueError(f"{baseline!r} has no per-block {domain}-domain NLL ({key!r}); evaluate with ood_corpus set "
                         "and this code")  # fmt: skip
    rows = {}
    for name, result in stage["results"].items():
        x = result.get(key)
        if x is None or len(x) != len(y):
            raise ValueError(f"{name!r} was not scored on the same {domain}-domain blocks as {baseline!r}; "
                             "evaluate both with one config")  # fmt: skip
        d = paired_difference(x, y, None, n_boot, seed)
        rows[name] = {"ppl": math.exp(d.mean_x), "ppl_ratio": math.exp(d.diff), "ratio_low": math.exp(d.low),
                      "ratio_high": math.exp(d.high), "significant": d.significant, "blocks": d.n}  # fmt: skip
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return table


def task_differences(
    stage: dict[str, Any], variant: str, metric: str = "acc_norm", baseline: str = BASELINE, n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:  # fmt: skip
    """``variant`` − ``baseline`` per task on the same items, with 95 % paired bootstrap intervals, and their macro average.

    Rows: each task, then ``average`` (equal to ``paired_table``'s row). Columns ``diff``, ``low``,
    ``high``, ``significant``, ``n`` (items). Units as in ``paired_table``.
    """
    scale = _scale(metric)
    x, y, groups = _aligned(stage, variant, metric, baseline)
    rows = {}
    for task in dict.fromkeys(groups.tolist()):
        pick = groups == task
        d = paired_difference(scale * x[pick], scale * y[pick], None, n_boot, seed)
        rows[task] = {"diff": d.diff, "low": d.low, "high": d.high, "significant": d.significant, "n": d.n}
    d = paired_difference(scale * x, scale * y, groups, n_boot, seed)
    rows["average"] = {"diff": d.diff, "low": d.low, "high": d.high, "significant": d.significant, "n": d.n}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "task"
    return table


HIGHER_IS_BETTER = {"acc": True, "acc_norm": True, "gold_prob": True, "gold_prob_norm": True, "gold_bpb": False}
UNITS = {"acc": "points", "acc_norm": "points", "gold_prob": "points", "gold_prob_norm": "points", "gold_bpb": "bits/byte"}


def paired_sentences(table: pd.DataFrame, metric: str, baseline: str = BASELINE) -> list[str]:
    """One sentence per model of a ``paired_table``: its difference, interval, and whether the items support it.

    A difference is called better or worse only when its 95 % interval excludes 0; otherwise the
    sentence says the items cannot tell the model from ``baseline``.
    """
    sentences = []
    for name, row in table.drop(index=baseline, errors="ignore").iterrows():
        better = (row["diff"] > 0) == HIGHER_IS_BETTER[metric]
        verdict = (f"{'better' if better else 'worse'} than {baseline} (the interval excludes 0)" if row["significant"]
                   else f"not distinguishable from {baseline} on these items (the interval includes 0)")  # fmt: skip
        extra = f"; McNemar p = {row['p_value']:.3g}" if "p_value" in row and pd.notna(row["p_value"]) else ""
        sentences.append(f"{name}: {metric} {row['diff']:+.3g} {UNITS[metric]} [{row['low']:+.3g}, {row['high']:+.3g}], "
                         f"{verdict}{extra}.")  # fmt: skip
    return sentences


def unhealed_variant(stage: dict[str, Any]) -> str | None:
    """The pruned, unhealed variant the healed ones start from: the one notebook 02 saved as best at its k."""
    return next((name for name, meta in stage["meta"].items() if meta.get("best_at_k")), None)


def sizing_check(table: pd.DataFrame, unhealed: str, metric: str) -> dict[str, Any]:
    """Is the item set large enough? The widest half-width of ``metric``'s paired intervals (over the
    variants) against one third of the ``unhealed`` variant's loss on it, ``|diff|`` vs the original.

    A recipe that wins back a third of the loss is visible only if the interval is at most that wide
    (issue 11's sizing rule). Returns ``{"metric", "half_width", "loss", "limit", "ok"}``.
    """
    variants = table.drop(index=BASELINE, errors="ignore")
    half, loss = float(variants["half_width"].max()), abs(float(table.loc[unhealed, "diff"]))
    return {"metric": metric, "half_width": half, "loss": loss, "limit": loss / 3, "ok": half <= loss / 3}


def study_variants(pruning: Any, heal_k: int, healing: Any) -> tuple[str, ...]:
    """The variants the study compares: notebook 02's best whole-block cut at ``heal_k``, unhealed
    (``prune-k{heal_k}-<strategy>``), and notebook 03's healed variants of that cut (``<prefix>-<recipe>``)."""
    strategy, _ = best_selection(pruning, heal_k)  # runs (or reads) the cached pruning stage
    healed = [f"{healing.variant_prefix}-{recipe}" for recipe in healing.recipes] if healing.variant_prefix else []
    return (f"prune-k{heal_k}-{strategy}", *healed)


def evaluation_config(profile: Any) -> EvaluationConfig:
    """The evaluation config of a ``frankenllama.stages.profiles.Profile``: its own, with the variants set to
    ``study_variants`` where the profile compares only those (``profile.study_variants_only``)."""
    config = profile.evaluation
    if not getattr(profile, "study_variants_only", False) or config.variants is not None:
        return config
    return replace(config, variants=study_variants(profile.pruning, profile.heal_k, profile.healing))
