"""Healing a pruned model: win back quality at a fixed token budget, or with no training at all.

``heal(student, tokenizer, HealConfig(recipe=...), ...)`` runs one recipe from the ``RECIPES``
registry (``"lora"``, ``"kd-lora"``, ``"kd-full"``, ``"partial"``, ``"linear-patch"``, or a
composition such as ``"linear-patch+lora"``) and returns a ``HealResult``: the healed plain
transformers model, tokens seen, wall time, tokens/s, eval perplexity before/after and along the
way, and the loss log. See ``recipes`` for the methods and their papers, ``patch`` for the
training-free ReplaceMe patch, ``trainer`` for the losses, ``pipeline`` for budget, resume and
saving, ``compare`` for running several recipes alike, and ``report`` for the recovery table.
"""

from frankenllama.healing.compare import choose_cut, compare_recipes, layers_to_remove
from frankenllama.healing.patch import PatchError, PatchFit, linear_patch
from frankenllama.healing.pipeline import CheckpointMismatchError, HealResult, batch_indices, heal, model_digest
from frankenllama.healing.recipes import RECIPES, HealConfig, Recipe, UnknownRecipeError, parse_recipe
from frankenllama.healing.report import gap_recovered, plot_losses, plot_ppl_vs_tokens, recovery_table
from frankenllama.healing.trainer import LoraTargetError, RecipeTrainer, TeacherMismatchError

__all__ = [
    "RECIPES",
    "CheckpointMismatchError",
    "HealConfig",
    "HealResult",
    "LoraTargetError",
    "PatchError",
    "PatchFit",
    "Recipe",
    "RecipeTrainer",
    "TeacherMismatchError",
    "UnknownRecipeError",
    "batch_indices",
    "choose_cut",
    "compare_recipes",
    "gap_recovered",
    "heal",
    "layers_to_remove",
    "linear_patch",
    "model_digest",
    "parse_recipe",
    "plot_losses",
    "plot_ppl_vs_tokens",
    "recovery_table",
]
