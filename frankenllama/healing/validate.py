"""Every check a healing run makes before any work or write, and the plan it derives from them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from frankenllama.healing.patch import check_teacher_lineage, patch_runs
from frankenllama.healing.recipes import HealConfig, Recipe
from frankenllama.healing.trainer import check_lora_targets, check_teacher, partial_layers


@dataclass(frozen=True)
class RunPlan:
    """What a validated run will do: its trained step, its number of optimizer steps and its blocks."""

    trained: Recipe | None  # the gradient-trained step of the recipe (None: training-free)
    batch_size: int  # blocks per optimizer step
    block_len: int  # tokens per training block (0 for a training-free recipe)
    n_steps: int  # optimizer steps: tokens // (batch_size · block_len); 0 for a training-free recipe
    calib_blocks: torch.Tensor | None  # the blocks the patch is fitted on, cut to patch_tokens

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.block_len


def validate_run(
    student: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: HealConfig,
    train_blocks: torch.Tensor | None,
    teacher: PreTrainedModel | None,
    teacher_tokenizer: PreTrainedTokenizerBase | None,
    calib_blocks: torch.Tensor | None,
) -> RunPlan:
    """Refuse any input the run cannot use (recipe, teacher, LoRA targets, patch layers, budget).

    Returns the plan; ``calib_blocks`` default to the training blocks and are cut to the first
    ``ceil(patch_tokens / T)`` blocks.
    """
    trained = config.trained_recipe
    if trained is not None and (train_blocks is None or train_blocks.dim() != 2 or len(train_blocks) == 0):
        raise ValueError(f"recipe {config.recipe!r} trains: pass train_blocks as an (N, T) tensor of token blocks")
    if config.distills and teacher is None:
        raise ValueError(f"recipe {config.recipe!r} needs the unpruned model as teacher=")
    if teacher is not None:
        check_teacher(student, teacher, tokenizer, teacher_tokenizer)
    if config.patches:
        check_teacher_lineage(student, teacher)
        patch_runs(student, config.patch_layers)
        if calib_blocks is None:
            if train_blocks is None:
                raise ValueError("the linear patch needs calib_blocks (or train_blocks to take them from)")
            calib_blocks = train_blocks
    if trained is not None and trained.adapter == "lora":
        check_lora_targets(student, config.lora_targets)
    if trained is not None and trained.adapter == "partial":
        partial_layers(student, config.partial_scope, config.partial_width)
    block_len = int(train_blocks.shape[1]) if trained is not None else 0
    n_steps = config.tokens // (config.batch_size * block_len) if trained is not None else 0
    if trained is not None and n_steps < 1:
        raise ValueError(
            f"a budget of {config.tokens} tokens is less than one step of {config.batch_size} × {block_len} tokens; "
            "raise tokens or lower batch_size"
        )
    if calib_blocks is not None:
        calib_n = max(1, min(len(calib_blocks), -(-config.patch_tokens // calib_blocks.shape[1])))
        calib_blocks = calib_blocks[:calib_n]
    return RunPlan(trained, config.batch_size, block_len, n_steps, calib_blocks)
