"""Healing a pruned model: win back quality at a fixed token budget, or with no training at all.

``heal(student, tokenizer, HealConfig(recipe=...), ...)`` runs one recipe from the ``RECIPES``
registry (``"lora"``, ``"kd-lora"``, ``"kd-full"``, ``"partial"``, ``"linear-patch"``, or a
composition such as ``"linear-patch+lora"``) and returns a ``HealResult``: the healed plain
transformers model, tokens seen, wall time, tokens/s, eval perplexity before/after and along the
way, and the loss log.

Modules: ``recipes`` (the registry, the methods and their papers, ``HealConfig``), ``patch`` (the
training-free ReplaceMe patch), ``teacher`` (cached teacher targets), ``trainer`` (the losses and
one optimizer step), and ``heal``'s parts: ``validate`` (every check before any work),
``fingerprint`` (what identifies a run), ``loop`` (batch order, training loop), ``checkpoint``
(pickle-free resume), ``save`` (the variant folder), ``pipeline`` (``heal`` itself), ``launch``
(the script ``accelerate launch`` runs: ``heal`` data-parallel over processes); ``compare``
runs several recipes alike and ``report`` gives the recovery table. Notebook 03's stage is
``frankenllama.stages.healing``; its figures are ``frankenllama.figures.healing``.
"""

from frankenllama.healing.checkpoint import CheckpointFormatError, CheckpointMismatchError
from frankenllama.healing.compare import compare_recipes
from frankenllama.healing.fingerprint import model_digest, tensor_digest
from frankenllama.healing.loop import batch_indices
from frankenllama.healing.patch import PatchError, PatchFit, TeacherStreams, linear_patch
from frankenllama.healing.pipeline import heal
from frankenllama.healing.recipes import RECIPES, HealConfig, Recipe, UnknownRecipeError, parse_recipe
from frankenllama.healing.report import gap_recovered, recovery_table
from frankenllama.healing.result import HealResult
from frankenllama.healing.save import save_healed
from frankenllama.healing.trainer import LoraTargetError, RecipeTrainer, TeacherMismatchError

__all__ = [
    "RECIPES",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "HealConfig",
    "HealResult",
    "LoraTargetError",
    "PatchError",
    "PatchFit",
    "Recipe",
    "RecipeTrainer",
    "TeacherMismatchError",
    "TeacherStreams",
    "UnknownRecipeError",
    "batch_indices",
    "compare_recipes",
    "gap_recovered",
    "heal",
    "linear_patch",
    "model_digest",
    "parse_recipe",
    "recovery_table",
    "save_healed",
    "tensor_digest",
]
