"""Notebook 03's stage: remove the blocks the pruning stage chose, then heal with every recipe alike.

``healing_stage(config, cut, strategy)`` loads the unpruned model (the teacher) and the token
blocks (``train`` for training, ``calib`` for the linear patch, held-out ``eval`` for perplexity,
and the ``eval`` split of the eval-only ``ood_corpus`` for out-of-domain perplexity, text no recipe
trains or calibrates on), measures the unpruned model's per-block NLL in both domains — the
reference the recovery table measures the gap to; cached under ``data/cache/healing-reference/``
keyed by the model, the eval blocks and the code of ``CODE`` — drops the ``cut`` blocks and heals the pruned model with each recipe at the
same training-token budget (``frankenllama.healing.compare_recipes``). Each healed model is saved
as variant ``<variant_prefix>-<recipe>`` for notebook 04; a variant whose run fingerprint matches
is read instead of retrained, and a killed run resumes from its checkpoint.

The cut comes from the caller, normally the pruning stage's best layer strategy at ``k``::

    strategy, layers = best_selection(pruning_config, k)
    result = healing_stage(HealingStageConfig(), layers, strategy)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from frankenllama.healing.loop import eval_nll, nll_ppl

from frankenllama.cache import cached_json, seed_everything
from frankenllama.healing import HealConfig, HealResult, compare_recipes, parse_recipe, recovery_table
from frankenllama.models import DEFAULT_MODEL, num_layers
from frankenllama.stages.common import DataConfig, shared_model
from frankenllama.surgery import check_layer_ids, drop_layers
from frankenllama.variants import variant_path

# what computes the cached reference perplexity (this module included: it picks the blocks and the call)
CODE = ("frankenllama.stages.healing", "frankenllama.eval.perplexity", "frankenllama.healing.loop", "frankenllama.data",
        "frankenllama.models")
RECIPES = ("linear-patch", "lora", "kd-lora", "kd-full", "partial", "linear-patch+lora")


@dataclass(frozen=True)
class HealingStageConfig:
    """Notebook 03's settings: the model, its corpus, the recipes and their shared budget.

    Defaults: 8k training tokens per recipe (8 steps of 4 × 256), sized for the 30-minute pipeline
    on 2 CPU cores; 8 held-out eval blocks (2k tokens) in domain and 8 out of domain; 8k calibration
    tokens for the linear patch.
    """

    model: str = DEFAULT_MODEL  # registry name, local transformers folder or GGUF file
    corpus: str = "wiki-leads"  # corpus name or path to a text file (train / calib / eval splits)
    recipes: tuple[str, ...] = RECIPES  # RECIPES keys of frankenllama.healing or compositions
    tokens: int = 8192  # training-token budget per recipe
    block_len: int = 256  # tokens per block (training, calibration, evaluation)
    batch_size: int = 4  # blocks per optimizer step
    eval_every: int = 4  # optimizer steps between eval-perplexity points
    checkpoint_every: int = 4  # optimizer steps between checkpoints (a killed run resumes from the last one)
    eval_blocks: int = 8  # held-out eval blocks (of each domain)
    ood_corpus: str | None = "olmo-passages"  # out-of-domain eval text (its eval split; None: in-domain only)
    patch_tokens: int = 8192  # calibration tokens for the linear patch's least-squares fit
    kd_top_k: int = 64  # distillation targets: the teacher's top-k tokens, cached once (0: full KL)
    lora_rank: int = 8  # rank of every LoRA recipe's adapters (alpha = 2 x rank: the same scale at every rank)
    seed: int = 0  # seed set at the entry of each healing run
    variant_prefix: str | None = "healed"  # healed models are saved as variants <prefix>-<recipe> (None: not saved)

    def __post_init__(self) -> None:
        if isinstance(self.recipes, str):
            raise TypeError(f"recipes must be a tuple of recipe names, e.g. ({self.recipes!r},)")
        object.__setattr__(self, "recipes", tuple(self.recipes))
        if not self.recipes or len(set(self.recipes)) != len(self.recipes):
            raise ValueError(f"recipes must be distinct and at least one, got {self.recipes!r}")
        for recipe in self.recipes:
            parse_recipe(recipe)
        if self.tokens < self.block_len or self.patch_tokens < 1 or self.eval_blocks < 1:
            raise ValueError(f"need tokens >= block_len ({self.block_len}), patch_tokens >= 1 and eval_blocks >= 1; "
                             f"got {self.tokens}, {self.patch_tokens}, {self.eval_blocks}")  # fmt: skip
        self.heal_config()  # validates the budget, cadences and kd_top_k
        for split in ("train", "calib", "eval"):
            self.data(split)  # validates block_len
        if self.variant_prefix is not None:
            variant_path(f"{self.variant_prefix}-{self.recipes[0]}")  # validates the variant names

    def heal_config(self) -> HealConfig:
        """The config every recipe runs with (its ``recipe`` replaced per run)."""
        return HealConfig(tokens=self.tokens, batch_size=self.batch_size, eval_every=self.eval_every,
                          checkpoint_every=self.checkpoint_every, patch_tokens=self.patch_tokens,
                          kd_top_k=self.kd_top_k, lora_rank=self.lora_rank, lora_alpha=2.0 * self.lora_rank,
                          seed=self.seed)  # fmt: skip

    def data(self, split: str) -> DataConfig:
        """The blocks of ``split``: ``train`` covers the budget, ``calib`` the patch tokens, ``eval`` ``eval_blocks``,
        ``ood`` ``eval_blocks`` of the ``ood_corpus``'s eval split."""
        n_blocks = {"train": self.tokens // self.block_len, "calib": -(-self.patch_tokens // self.block_len),
                    "eval": self.eval_blocks, "ood": self.eval_blocks}[split]  # fmt: skip
        if split == "ood":
            if self.ood_corpus is None:
                raise ValueError("no out-of-domain corpus: set ood_corpus (e.g. 'olmo-passages')")
            return DataConfig(corpus=self.ood_corpus, split="eval", block_len=self.block_len, n_blocks=n_blocks)
        return DataConfig(corpus=self.corpus, split=split, block_len=self.block_len, n_blocks=n_blocks)


@dataclass
class HealingStageResult:
    """What notebook 03 shows: the cut, the reference and unhealed perplexities in and out of domain, one
    result per recipe."""

    config: HealingStageConfig
    strategy: str  # the selection strategy that chose the cut
    layers: list[int]  # original ids of the removed blocks, sorted
    reference_ppl: float  # in-domain eval perplexity of the unpruned model
    unhealed_ppl: float  # in-domain eval perplexity of the pruned model before healing
    results: list[HealResult]  # one per recipe, in config.recipes order (models released; see out_dir)
    reference_ppl_ood: float | None = None  # the same two out of domain (None: not measured)
    unhealed_ppl_ood: float | None = None
    reference_nll: dict[str, list[float] | None] | None = None  # the unpruned model's per-block NLL, {"in", "out"}

    @property
    def recovery(self) -> pd.DataFrame:
        """The recovery table, both domains: one row per recipe (``frankenllama.healing.report.recovery_table``)."""
        return recovery_table(self.results, self.reference_ppl, self.reference_ppl_ood, self.reference_nll,
                              seed=self.config.seed)  # fmt: skip


def reference_nll(config: HealingStageConfig) -> dict[str, list[float] | None]:
    """Per-block mean NLL of the unpruned ``config.model`` on the stage's eval blocks, ``{"in": …, "out": …}``
    (``"out"``: the ``ood_corpus`` blocks, ``None`` without one); cached."""
    domains = {"in": config.data("eval"), "out": config.data("ood") if config.ood_corpus is not None else None}

    def compute() -> dict[str, list[float] | None]:
        model, tokenizer = shared_model(config.model)
        return {d: None if data is None else eval_nll(model, data.blocks(tokenizer, model), 4) for d, data in domains.items()}

    key = {"model": config.model, "eval": domains["in"], "ood": domains["out"]}
    return cached_json("healing-reference", key, compute, seed=config.seed, code=CODE)


def reference_perplexity(config: HealingStageConfig) -> float:
    """In-domain eval perplexity of the unpruned ``config.model`` on the stage's eval blocks (cached)."""
    return nll_ppl(reference_nll(config)["in"])


def healing_stage(config: HealingStageConfig, cut: Sequence[int], strategy: str) -> HealingStageResult:
    """Remove blocks ``cut`` (original ids, chosen by ``strategy``) and heal with every recipe of ``config``."""
    seed_everything(config.seed)
    teacher, tokenizer = shared_model(config.model)
    layers = check_layer_ids([int(i) for i in cut], num_layers(teacher))
    if not layers:
        raise ValueError("the cut is empty: pass the blocks to remove, e.g. best_selection(pruning_config, k)[1]")
    train, calib, held_out = (config.data(s).blocks(tokenizer, teacher) for s in ("train", "calib", "eval"))
    ood = config.data("ood").blocks(tokenizer, teacher) if config.ood_corpus is not None else None
    reference = reference_nll(config)
    student = drop_layers(teacher, layers)
    results = compare_recipes(
        student, tokenizer, config.recipes, config.heal_config(), teacher=teacher, train_blocks=train,
        eval_blocks=held_out, calib_blocks=calib, ood_blocks=ood, variant_prefix=config.variant_prefix,
        meta={"strategy": strategy, "removed_layers": layers, "base_model": config.model},
    )  # fmt: skip
    del student
    first = results[0]
    return HealingStageResult(config, strategy, layers, nll_ppl(reference["in"]), first.ppl_before, results,
                              nll_ppl(reference["out"]), first.ppl_before_ood, reference)  # fmt: skip
