"""The steps of ``compress``, each cached under a key of its inputs and code, so a re-run skips them.

* ``select`` — the strategy's choice under the target (``frankenllama.budget.fit_budget``) on the
  selection context the pruning stage builds (``frankenllama.stages.pruning.scoring_context``:
  similarity, scores and searches cached on disk and shared with notebook 02); falls back to a
  whole-block strategy when the requested one cannot meet the target.
* ``prune`` — remove the chosen blocks (``surgery.drop_layers``) or sub-blocks (``sublayer.prune_sublayers``).
* ``heal_student`` — ``frankenllama.healing.heal`` with the recipe (a healed folder reused by its
  run fingerprint, checkpoints every ``checkpoint_every`` steps). The ReplaceMe patch folds into the
  last projection before a removed run (the MLP's, or the attention's where that block lost its MLP),
  so it covers every run of whole blocks but one at block 0.
* ``evaluate`` — per-block next-token NLL on held-out text of both domains and per-item zero-shot
  scores (``frankenllama.eval.zero_shot``), cached per model digest.
* ``speed`` — size and prefill / decode speed of the original and the compressed model side by side
  (``frankenllama.eval.efficiency.compare_efficiency``).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from frankenllama import paths
from frankenllama.budget import Budget, BudgetError, fit_budget
from frankenllama.cache import cached_json, config_key, seed_everything
from frankenllama.compress.config import DEFAULT_HEAL_OPTIONS, CompressConfig
from frankenllama.eval.efficiency import compare_efficiency
from frankenllama.eval.perplexity import block_nll
from frankenllama.eval.zero_shot import evaluate_tasks
from frankenllama.healing import HealConfig, HealResult, heal, parse_recipe
from frankenllama.healing.patch import patchable_layers
from frankenllama.selection import get_strategy
from frankenllama.stages.common import DataConfig
from frankenllama.stages.pruning import CODE as PRUNING_CODE
from frankenllama.stages.pruning import scoring_context
from frankenllama.stages.profiles import build
from frankenllama.sublayer import prune_sublayers
from frankenllama.surgery import drop_layers
from frankenllama.units import describe, whole_layers

SELECT_CODE = (*PRUNING_CODE, "frankenllama.compress.target", "frankenllama.compress.steps")
HEAL_CODE = ("frankenllama.healing", "frankenllama.sublayer", "frankenllama.surgery", "frankenllama.compress.steps")
EVAL_CODE = ("frankenllama.eval", "frankenllama.data", "frankenllama.models", "frankenllama.sublayer",
             "frankenllama.loss", "frankenllama.compress.steps")  # fmt: skip


class CompressError(ValueError):
    """``compress`` cannot do what it was asked: one line naming the problem and the fix."""


def _cached(stage: str, key: Any, compute: Callable[[], Any], code: tuple[str, ...], ran: list[str], seed: int | None = None) -> Any:
    """``cached_json`` that appends ``stage`` to ``ran`` when it computes (a step reports whether it was cached)."""

    def run() -> Any:
        ran.append(stage)
        return compute()

    return cached_json(stage, key, run, seed=seed, code=code)


def strategy_budgets(config: CompressConfig, model: PreTrainedModel) -> dict[str, Budget]:
    """The budget of the target for the strategy and its fallback, in order (``TargetError`` if none can apply)."""
    strategies = [s for s in dict.fromkeys((config.strategy, config.fallback_strategy)) if s]
    return {s: config.parsed_target.budget(model, get_strategy(s).granularity) for s in strategies}


def select(config: CompressConfig, model: PreTrainedModel, model_id: str, ran: list[str]) -> dict[str, Any]:
    """The units to remove: ``config.strategy``'s choice under the target, else the fallback's (cached).

    Every budget is checked before any scoring, so a target the model already meets or one that
    removes every block fails at once (``TargetError``).
    """
    budgets = strategy_budgets(config, model)
    strategies = list(budgets)
    pruning = build(config.profile, model=config.model, corpus=config.corpus).pruning

    def compute() -> dict[str, Any]:
        seed_everything(pruning.seed)
        ctx = scoring_context(pruning)
        tried = []
        for strategy in strategies:
            try:
                fit = fit_budget(ctx, budgets[strategy], strategy)
            except BudgetError as err:
                tried.append(f"{strategy}: {err}")
                continue
            units = fit.removed
            return {"strategy": strategy, "requested": config.strategy, "granularity": fit.granularity,
                    "removed": units, "removed_layers": units if fit.granularity == "layer" else whole_layers(units),
                    "removed_sublayers": describe(units) if fit.granularity == "sublayer" else [],
                    "budget": asdict(budgets[strategy]), "fallback_reason": "; ".join(tried) or None}  # fmt: skip
        raise CompressError(f"no strategy meets target {config.target}: {'; '.join(tried)}; give a larger target")

    key = {"model": model_id, "pruning": pruning, "target": config.parsed_target, "strategies": strategies}
    return _cached("compress-selection", key, compute, SELECT_CODE, ran, seed=pruning.seed)


def prune(model: PreTrainedModel, selection: dict[str, Any]) -> PreTrainedModel:
    """A pruned copy of ``model`` without the selected blocks or sub-blocks."""
    if selection["granularity"] == "layer":
        return drop_layers(model, selection["removed"])
    return prune_sublayers(model, selection["removed"])


def heal_plan(config: CompressConfig, student: PreTrainedModel) -> tuple[HealConfig | None, str | None]:
    """The ``HealConfig`` of this run (``None``: nothing left to run) and why the recipe was changed, if it was."""
    steps = [s.name for s in parse_recipe(config.heal)]
    layers, note = patchable_layers(student), None
    if "linear-patch" in steps and not layers:
        steps.remove("linear-patch")
        note = "linear patch skipped: no removed run of whole blocks after block 0 for it to stand in for"
    if not steps:
        return None, note
    patches = "linear-patch" in steps
    return HealConfig(recipe="+".join(steps), tokens=config.tokens, batch_size=config.train_batch,
                      patch_tokens=config.calib_tokens, kd_top_k=config.kd_top_k, seed=config.seed,
                      checkpoint_every=config.checkpoint_every, patch_layers=layers if patches else None,
                      **dict(DEFAULT_HEAL_OPTIONS)), note  # fmt: skip


def _blocks(config: CompressConfig, corpus: str, split: str, n_tokens: int, tokenizer, model) -> torch.Tensor:
    return DataConfig(corpus, split, config.block_len, max(1, math.ceil(n_tokens / config.block_len))).blocks(tokenizer, model)


def heal_student(
    config: CompressConfig, teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, student: PreTrainedModel,
    student_id: str, meta: dict[str, Any],
) -> tuple[HealResult | None, str | None, Path]:  # fmt: skip
    """Heal ``student`` from ``teacher``; returns the result (``None`` when nothing ran), a note, and its folder.

    The folder lives under the cache (``compress-healed/<key>``), keyed by the student, the heal
    config, the data and the healing code; ``heal`` reuses it when its fingerprint matches and
    resumes from its checkpoints otherwise.
    """
    plan, note = heal_plan(config, student)
    key = {"student": student_id, "heal": plan, "corpus": config.corpus, "block_len": config.block_len}
    folder = paths.CACHE_DIR / "compress-healed" / config_key("compress-healed", key, HEAL_CODE)
    if plan is None:
        return None, note, folder
    train = _blocks(config, config.corpus, "train", config.tokens, tokenizer, teacher) if plan.trained_recipe else None
    calib = _blocks(config, config.corpus, "calib", config.calib_tokens, tokenizer, teacher) if plan.patches else None
    result = heal(student, tokenizer, plan, train_blocks=train, teacher=teacher, calib_blocks=calib, out_dir=folder,
                  meta=meta, eval_batch_size=config.batch_size, progress=True)  # fmt: skip
    return result, note, folder


def eval_settings(config: CompressConfig, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """What the evaluation of one model reads (part of its cache key)."""
    chat = bool(getattr(tokenizer, "chat_template", None)) if config.chat_template is None else config.chat_template
    return {"domains": {"in-domain": config.corpus, "out-of-domain": config.ood_corpus}, "block_len": config.block_len,
            "eval_blocks": config.eval_blocks, "tasks": config.tasks, "items": config.eval_items, "seed": config.seed,
            "chat_template": chat}  # fmt: skip


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, model_id: str, config: CompressConfig,
             ran: list[str]) -> dict[str, Any]:  # fmt: skip
    """Per-block held-out NLL in both domains and per-item zero-shot scores of ``model`` (cached by its digest)."""
    settings = eval_settings(config, tokenizer)

    def compute() -> dict[str, Any]:
        seed_everything(config.seed)
        nll = {}
        for domain, corpus in settings["domains"].items():
            blocks = DataConfig(corpus, "eval", config.block_len, config.eval_blocks).blocks(tokenizer, model)
            sums, counts = block_nll(model, blocks, batch_size=config.batch_size)  # the perplexity protocol, per block
            nll[domain] = (sums / counts).tolist()  # each block's mean next-token NLL: the paired units
        tasks = evaluate_tasks(model, tokenizer, config.tasks, config.eval_items, config.seed, settings["chat_template"],
                               progress=True)  # fmt: skip
        return {"nll": nll, "tasks": {task: asdict(r) for task, r in tasks.items()}}

    return _cached("compress-eval", {"model": model_id, "eval": settings}, compute, EVAL_CODE, ran, seed=config.seed)


def speed(original: PreTrainedModel, compressed: PreTrainedModel, ids: tuple[str, str], config: CompressConfig,
          ran: list[str]) -> dict[str, Any]:  # fmt: skip
    """Size and prefill / decode speed of both models measured side by side, with ratios (cached)."""

    def compute() -> dict[str, Any]:
        table = compare_efficiency({"original": original, "compressed": compressed}, config.speed)
        table = table.drop(columns="timed_as")  # two models of different shapes: each timed itself
        return {name: {k: float(v) for k, v in row.items()} for name, row in table.to_dict("index").items()}

    return _cached("compress-speed", {"models": ids, "speed": config.speed}, compute, EVAL_CODE, ran)
