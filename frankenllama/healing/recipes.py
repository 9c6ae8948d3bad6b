"""Healing recipes (a registry keyed by short names) and the one frozen config of a healing run.

A recipe string names one recipe or a composition joined by ``+``, applied left to right, e.g.
``"linear-patch+lora"`` (patch the cut without training, then heal the patched model with LoRA).
Only the training-free patch may precede a trained recipe, and at most one trained recipe runs.

Recipes:

* ``"lora"`` — LoRA adapters (Hu et al. 2021, arXiv:2106.09685) through ``peft`` on the chosen
  linear modules, trained on the next-token loss and merged back into plain weights.
* ``"kd-lora"`` / ``"kd-full"`` — knowledge distillation from the unpruned model (Hinton et al.
  2015, arXiv:1503.02531): ``T²·KL(p_teacher^T ‖ p_student^T)`` on the next-token distributions at
  temperature ``T``, mixed with the next-token loss. By default (``kd_top_k=64``) the teacher runs
  once over the run's training blocks and its top-k log-probabilities are cached and shared by every
  distillation run (``frankenllama.healing.teacher``); ``kd_top_k=0`` runs it at every step and uses
  the full-vocabulary KL. Optionally (online teacher only) a hidden-state loss at each cut
  (the student's residual after the last block before a cut regressed on the teacher's residual
  after the last removed block, as in Gromov et al. 2024, arXiv:2403.17887). Trained through LoRA
  or on all weights.
* ``"partial"`` — partial-layer fine-tuning (Lu et al. 2024, "Reassessing Layer Pruning in LLMs",
  arXiv:2411.15558): only a few whole blocks are trained — by default the ``partial_width`` kept
  blocks on each side of every cut (``partial_scope="cut"``), or the last ``partial_width`` blocks as
  in the paper (``"last"``) — plus the final norm and optionally the LM head. Nothing before the
  first trained block needs a backward pass, which makes it the cheapest trained recipe.
* ``"linear-patch"`` — training-free: a least-squares linear map stands in for each removed block
  run and is folded into the down projection of the MLP just before the cut (ReplaceMe, Shopkhoev
  et al. 2025, arXiv:2505.02819); see ``frankenllama.healing.patch``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

LLAMA_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class UnknownRecipeError(KeyError):
    """A recipe name is not in ``RECIPES`` (or a composition is not allowed)."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


@dataclass(frozen=True)
class Recipe:
    """What a healing recipe does; the training loop reads these flags, nothing else."""

    name: str
    description: str
    trains: bool  # runs the gradient loop (False: training-free)
    adapter: Literal["lora", "full", "partial", "none"]
    distill: bool  # needs the unpruned teacher for the loss
    default_lr: float


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("lora", "LoRA on the next-token loss, merged into the weights", True, "lora", False, 2e-3),
        Recipe("kd-lora", "distillation from the unpruned model through LoRA", True, "lora", True, 2e-3),
        Recipe("kd-full", "distillation from the unpruned model on all weights", True, "full", True, 5e-5),
        Recipe("partial", "fine-tune only the blocks next to the cut (+ final norm)", True, "partial", False, 2e-4),
        Recipe("linear-patch", "training-free least-squares patch folded into down_proj (ReplaceMe)", False, "none", True, 0.0),
    )
}


def parse_recipe(recipe: str) -> tuple[Recipe, ...]:
    """The recipes of a (possibly ``+``-composed) recipe string, validated, in order of application."""
    if not isinstance(recipe, str) or not recipe.strip():
        raise UnknownRecipeError(f"recipe must be a non-empty string such as 'lora'; known: {sorted(RECIPES)}")
    names = [n.strip() for n in recipe.split("+")]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise UnknownRecipeError(
            f"unknown healing recipe {unknown[0]!r}; choose one of {sorted(RECIPES)} "
            "or compose them as 'linear-patch+<recipe>'"
        )
    steps = tuple(RECIPES[n] for n in names)
    if len(set(names)) != len(names):
        raise UnknownRecipeError(f"recipe {recipe!r} names a step twice")
    if sum(s.trains for s in steps) > 1:
        raise UnknownRecipeError(f"recipe {recipe!r} has more than one trained step; use one trained recipe")
    if any(not s.trains for s in steps[1:]):
        raise UnknownRecipeError(f"recipe {recipe!r}: the training-free patch must come first ('linear-patch+lora')")
    return steps


@dataclass(frozen=True)
class HealConfig:
    """Everything that determines a healing run's result; validated on construction.

    The token budget ``tokens`` is the unit of comparison between recipes: a trained recipe runs
    ``tokens // (batch_size · block_len)`` optimizer steps of ``batch_size`` blocks each (the block
    length comes from the training blocks). ``checkpoint_every`` only says how often progress is
    saved and is not part of the fingerprint, so a run may resume with a different cadence.
    """

    recipe: str = "lora"  # a key of RECIPES or a composition "linear-patch+<recipe>"
    tokens: int = 16_384  # training-token budget
    batch_size: int = 4  # blocks per optimizer step
    lr: float | None = None  # peak learning rate; None → the trained recipe's default (see learning_rate)
    warmup: float = 0.1  # fraction of steps of linear warm-up, then cosine decay to min_lr_ratio·lr
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global gradient norm (0 disables)
    seed: int = 0
    # LoRA
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = LLAMA_LINEAR_MODULES
    # distillation
    kd_temperature: float = 1.0  # 1 as in Minitron's logit distillation (arXiv:2407.14679); at 2 a 49k-token softmax is so flat that its top-64 holds a third of the mass
    kd_weight: float = 0.5  # loss = kd_weight·T²·KL + (1 − kd_weight)·CE
    hidden_weight: float = 0.0  # weight of the hidden-state MSE at the cut (0 disables)
    kd_top_k: int = 64  # teacher targets: its top-k tokens + a tail bucket, computed once and cached (0: full KL, teacher run at every step)
    # partial fine-tuning
    partial_scope: Literal["cut", "last"] = "cut"
    partial_width: int = 1  # blocks on each side of a cut ("cut") or at the top ("last")
    partial_train_head: bool = False  # also train the (tied) LM head / embedding matrix
    # linear patch
    patch_layers: tuple[int, ...] | None = None  # original ids of removed layers to patch; None → all
    patch_tokens: int = 16_384  # calibration tokens for the least-squares fit
    patch_ridge: float = 0.0  # ridge λ relative to the mean eigenvalue of MᵀM, towards plain removal (0 → least squares)
    # bookkeeping
    eval_every: int = 0  # steps between eval-perplexity points (0 → before and after only)
    log_every: int = 1  # steps between loss-log rows
    checkpoint_every: int = 0  # steps between checkpoints (0 → no checkpoints)

    steps: tuple[Recipe, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", parse_recipe(self.recipe))
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        if self.patch_layers is not None:
            object.__setattr__(self, "patch_layers", tuple(sorted(self.patch_layers)))
        trained = self.trained_recipe
        ints = {
            "tokens": self.tokens, "batch_size": self.batch_size, "lora_rank": self.lora_rank, "kd_top_k": self.kd_top_k,
            "partial_width": self.partial_width, "patch_tokens": self.patch_tokens, "seed": self.seed,
            "eval_every": self.eval_every, "log_every": self.log_every, "checkpoint_every": self.checkpoint_every,
        }  # fmt: skip
        for name, value in ints.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer, got {value!r}")
        if self.tokens <= 0:
            raise ValueError(f"the token budget must be positive, got tokens={self.tokens}; e.g. tokens=16384")
        for name in ("batch_size", "lora_rank", "partial_width", "patch_tokens", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 disables), got {getattr(self, name)}")
        if self.lr is not None and (isinstance(self.lr, bool) or not self.lr > 0):
            raise ValueError(f"lr must be positive (or None for the recipe's default), got {self.lr}")
        if not 0.0 <= self.warmup < 1.0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("warmup must be in [0, 1) and min_lr_ratio in [0, 1]")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.patch_ridge < 0:
            raise ValueError("weight_decay, grad_clip and patch_ridge must be >= 0")
        if self.lora_alpha <= 0 or not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError("lora_alpha must be positive and lora_dropout in [0, 1)")
        if not self.lora_targets or not all(isinstance(t, str) and t for t in self.lora_targets):
            raise ValueError(f"lora_targets must be non-empty module names, got {self.lora_targets!r}")
        if self.kd_temperature <= 0 or not 0.0 <= self.kd_weight <= 1.0 or self.hidden_weight < 0:
            raise ValueError("kd_temperature must be positive, kd_weight in [0, 1], hidden_weight >= 0")
        if self.kd_top_k < 0:
            raise ValueError(f"kd_top_k must be >= 0 (0: full-vocabulary KL with the teacher run at every step), got {self.kd_top_k}")
        if self.hidden_weight > 0 and self.kd_top_k:
            raise ValueError("hidden_weight > 0 needs the teacher's hidden states at every step: set kd_top_k=0 (online teacher)")
        if self.partial_scope not in ("cut", "last"):
            raise ValueError(f"partial_scope must be 'cut' or 'last', got {self.partial_scope!r}")
        if self.patch_layers is not None:
            if not self.patch_layers or len(set(self.patch_layers)) != len(self.patch_layers):
                raise ValueError(f"patch_layers must be distinct layer ids, got {self.patch_layers!r}")
            if not self.patches:
                raise ValueError("patch_layers is set but the recipe has no 'linear-patch' step")

    @property
    def trained_recipe(self) -> Recipe | None:
        """The one gradient-trained step of the recipe, if any."""
        return next((s for s in self.steps if s.trains), None)

    @property
    def learning_rate(self) -> float:
        """The peak learning rate: ``lr``, or the trained recipe's default when ``lr`` is None."""
        if self.lr is not None:
            return float(self.lr)
        trained = self.trained_recipe
        return trained.default_lr if trained else 0.0

    @property
    def patches(self) -> bool:
        return any(s.name == "linear-patch" for s in self.steps)

    @property
    def distills(self) -> bool:
        """Whether the run needs the unpruned teacher (KD loss or patch targets)."""
        return any(s.distill for s in self.steps)

    def fingerprint_dict(self) -> dict:
        """The fields that determine the result (everything but the checkpoint cadence)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        out.pop("checkpoint_every")
        out["lr"] = self.learning_rate
        return out
