"""Comparing recipes fairly: the same pruned model, data, eval blocks and token budget for each.

``compare_recipes`` heals one pruned model with several recipes (each from a fresh copy, each saved
as a variant so that later notebooks can evaluate it) and returns their ``HealResult``s. Which
blocks to remove is the pruning stage's choice (``frankenllama.stages.healing`` takes it as input).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from frankenllama.healing.loop import HeldOut
from frankenllama.healing.patch import TeacherStreams
from frankenllama.healing.pipeline import heal
from frankenllama.healing.recipes import HealConfig
from frankenllama.healing.result import HealResult
from frankenllama.variants import variant_path


def compare_recipes(
    student: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    recipes: Sequence[str],
    base: HealConfig,
    *,
    teacher: PreTrainedModel,
    train_blocks: torch.Tensor,
    eval_blocks: torch.Tensor,
    calib_blocks: torch.Tensor | None = None,
    ood_blocks: torch.Tensor | None = None,
    lrs: dict[str, float] | None = None,
    variant_prefix: str | None = "healed",
    meta: dict[str, Any] | None = None,
    keep_models: bool = False,
    progress: bool = True,
) -> list[HealResult]:
    """Heal ``student`` with each recipe at ``base``'s budget and settings; save each as a variant.

    Args:
        recipes: recipe strings (keys of ``RECIPES`` or compositions such as ``"linear-patch+lora"``).
        ood_blocks: out-of-domain eval blocks, measured beside ``eval_blocks`` (``None``: in-domain only).
        base: the shared config; its ``recipe`` is replaced per run, and its ``lr`` by ``lrs[recipe]``
            where given (``lr=None`` means each recipe's own default).
        variant_prefix: each result is saved as variant ``<prefix>-<recipe>`` (``None`` → not saved);
            a variant whose fingerprint matches is reused instead of retrained.
        keep_models: keep every healed model in memory (otherwise ``result.model`` is released).

    The student's held-out perplexity before healing is measured once, by the first run that is not
    a cache hit, and shared by the others (each run's wall time still counts it); so is the teacher's
    pass over the calibration blocks that the linear patches fit on (``TeacherStreams``).
    """

    measured: list[tuple[dict[str, list[float] | None], float]] = []  # every run has the same held-out blocks

    def student_nll(held_out: HeldOut) -> tuple[dict[str, list[float] | None], float]:
        if not measured:
            t = time.perf_counter()
            measured.append((held_out.nll(student), time.perf_counter() - t))
        return measured[0]

    streams = TeacherStreams()  # the recipes' linear patches share one teacher pass over the calibration blocks
    results = []
    for recipe in recipes:
        config = dataclasses.replace(base, recipe=recipe, lr=(lrs or {}).get(recipe, base.lr))
        out_dir: Path | None = variant_path(f"{variant_prefix}-{recipe}") if variant_prefix else None
        result = heal(
            student, tokenizer, config, train_blocks=train_blocks, teacher=teacher, calib_blocks=calib_blocks,
            eval_blocks=eval_blocks, ood_blocks=ood_blocks, out_dir=out_dir, meta=meta, progress=progress,
            student_nll=student_nll, teacher_streams=streams,
        )  # fmt: skip
        if not keep_models:
            result.model = None
        results.append(result)
    return results
