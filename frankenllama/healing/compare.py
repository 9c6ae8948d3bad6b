"""Comparing recipes fairly: the same pruned model, data, eval blocks and token budget for each.

``compare_recipes`` heals one pruned model with several recipes (each from a fresh copy, each saved
as a variant so that later notebooks can evaluate it) and returns their ``HealResult``s;
``choose_cut`` picks the blocks to remove when no earlier stage has chosen them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from frankenllama.healing.pipeline import HealResult, heal
from frankenllama.healing.recipes import HealConfig
from frankenllama.selection import select_layers
from frankenllama.similarity import layer_similarity
from frankenllama.variants import list_variants, variant_path


def choose_cut(model: PreTrainedModel, blocks: torch.Tensor, k: int, strategy: str = "angular-block") -> list[int]:
    """The ``k`` blocks that selection ``strategy`` removes, from residual similarity on ``blocks``.

    A stand-in for the choice cached by the pruning notebook: one forward pass over ``blocks``.
    Default: the contiguous run with the smallest angular distance (Gromov et al. 2024, arXiv:2403.17887).
    """
    return select_layers(layer_similarity(model, blocks), k, strategy)


def layers_to_remove(
    model: PreTrainedModel, k: int, model_name: str, fallback_blocks: torch.Tensor, fallback: str = "angular-block"
) -> tuple[str, list[int]]:
    """``(strategy, layers)``: the best strategy's choice at ``k``, as notebook 02 stored it.

    Notebook 02 saves the pruned model of its best layer strategy at k as variant ``prune-k<k>-<strategy>``
    with ``best_at_k`` in its metadata; that choice is read back here, whatever parameters notebook 02
    ran with. Without such a variant (notebook 02 not run, or another ``k``), falls back to
    ``choose_cut`` with ``fallback`` on ``fallback_blocks`` and says so in the returned strategy name.
    """
    for info in list_variants():
        meta = info.meta
        source = (meta.get("config") or {}).get("similarity", {}).get("model")
        if meta.get("best_at_k") and meta.get("k") == k and meta.get("granularity") == "layer" and source == model_name:
            return str(meta["strategy"]), [int(i) for i in meta["removed_layers"]]
    return f"{fallback} (fallback: notebook 02 stored no best k={k} choice)", choose_cut(model, fallback_blocks, k, fallback)


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
    lrs: dict[str, float] | None = None,
    variant_prefix: str | None = "healed",
    meta: dict[str, Any] | None = None,
    keep_models: bool = False,
    progress: bool = True,
) -> list[HealResult]:
    """Heal ``student`` with each recipe at ``base``'s budget and settings; save each as a variant.

    Args:
        recipes: recipe strings (keys of ``RECIPES`` or compositions such as ``"linear-patch+lora"``).
        base: the shared config; its ``recipe`` is replaced per run, and its ``lr`` by ``lrs[recipe]``
            where given (``lr=None`` means each recipe's own default).
        variant_prefix: each result is saved as variant ``<prefix>-<recipe>`` (``None`` → not saved);
            a variant whose fingerprint matches is reused instead of retrained.
        keep_models: keep every healed model in memory (otherwise ``result.model`` is released).
    """
    results = []
    for recipe in recipes:
        config = dataclasses.replace(base, recipe=recipe, lr=(lrs or {}).get(recipe, base.lr))
        out_dir: Path | None = variant_path(f"{variant_prefix}-{recipe}") if variant_prefix else None
        result = heal(
            student, tokenizer, config, train_blocks=train_blocks, teacher=teacher, calib_blocks=calib_blocks,
            eval_blocks=eval_blocks, out_dir=out_dir, meta=meta, progress=progress,
        )  # fmt: skip
        if not keep_models:
            result.model = None
        results.append(result)
    return results
