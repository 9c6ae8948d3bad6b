"""Notebook 05's stage: the FrankenLLaMA recipe against the peers' complete pipelines, at equal size and budget.

A *pipeline* is a selection strategy (``frankenllama.selection``) followed by a healing recipe
(``frankenllama.healing``). Each peer is run as its paper describes it, on the same model, at the
same parameter count and with the same training-token budget:

* ``shortgpt`` — Block Influence, then LoRA (ShortGPT, Men et al. 2024, arXiv:2403.03853);
* ``gromov`` — the contiguous run of blocks whose input and output are closest in angular
  distance (last token), then LoRA on the MLPs only (Gromov et al. 2024, arXiv:2403.17887);
* ``sleb`` — SLEB's iterative greedy removal, no healing (Song et al. 2024, arXiv:2402.09025);
* ``replaceme`` — the contiguous run closest in cosine distance over all tokens (the angular distance
  ``arccos(cos)/π`` is monotone in it, so the argmin is the same: ``"angular-block-all"``), then the
  training-free least-squares patch (ReplaceMe, Shopkhoev et al. 2025, arXiv:2505.02819);
* ``lu`` — reverse-order removal, then fine-tuning of the last ``3`` blocks and the LM head (Lu et al.
  2024, "Reassessing Layer Pruning in LLMs", arXiv:2411.15558, partial-layer fine-tuning);
* ``frankenllama`` — the workbook's recipe, ``RecipeStudyConfig.ours`` = ``(strategy, recipe)``.

"Equal size": at ``k`` blocks' worth, layer strategies remove k blocks and sub-layer strategies
remove sub-blocks until the model is no larger (``frankenllama.budget.fit_budget``, exactly as
notebook 02's pruning curves do; the selections are read from that cached stage). "Equal budget":
every trained pipeline sees the same training tokens (``healing.tokens``); calibration tokens of
the training-free patch are forward passes only and are reported apart.

Each pipeline's model is saved as variant ``<variant_prefix>-<percent>-<pipeline>`` (healed runs are
cached by their fingerprint, so a re-run reads them) and measured by notebook 04's evaluation stage,
one call per ratio on exactly that ratio's variants: perplexity per eval block in two domains —
in-domain (``wiki-leads`` eval split) and out-of-domain (``olmo-passages``, never used to calibrate
or heal) — so every ratio to the original carries a paired bootstrap interval over blocks
(``paired_perplexity_table``), and zero-shot items (at ``zero_shot_ks``) compared item by item
(``paired_table``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from frankenllama.budget import count_params, unit_params
from frankenllama.cache import seed_everything, to_jsonable
from frankenllama.healing import heal
from frankenllama.healing.patch import TeacherStreams, patchable_layers
from frankenllama.healing.recipes import parse_recipe
from frankenllama.models import num_layers
from frankenllama.selection import get_strategy
from frankenllama.stages.common import shared_model
from frankenllama.stages.evaluation import (BASELINE, EvaluationConfig, evaluation_stage, paired_perplexity_table,
                                            paired_table)
from frankenllama.stages.healing import HealingStageConfig
from frankenllama.stages.pruning import PruningConfig, pruning_stage
from frankenllama.sublayer import prune_sublayers
from frankenllama.surgery import drop_layers
from frankenllama.units import describe
from frankenllama.variants import intact, list_variants, save_variant, variant_path

MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
OURS = "frankenllama"
# The FrankenLLaMA recipe, defined once: notebook 05 runs it as "ours" and `compress` uses it by default.
OURS_STRATEGY = "part-swap"  # swap-search's blocks, then attention-for-attention swaps (notebook 02's best at k = 6, 9)
OURS_RECIPE = "linear-patch+kd-lora"  # the training-free patch where it folds, then distillation from cached top-k targets
# Distillation from the original, half the loss on its whole next-token distribution (logit distillation as
# in Minitron, arXiv:2407.14679) and half next-token cross-entropy on the training text, through LoRA
# adapters of rank 32 on every linear map. On SmolLM2, part-swap at 20 %, wiki-leads training tokens,
# olmo-passages blocks and zero-shot items (200 x ARC-Easy/PIQA/HellaSwag, seed 1) kept apart from the
# reported ones, paired against the original (acc_norm in points, gold bits per byte, perplexity ratios
# out / in domain; bench/zero_shot_recipe_probe.py):
#   64k (compress, <s15)      KD-LoRA rank 8            -4.3 [-6.8, -2.0]   +0.063   1.32 / 1.18
#                             KD-LoRA rank 32           -3.5 [-6.2, -1.0]   +0.042   1.30 / 1.17   (rank 64: -4.7, +0.028, 1.30 / 1.17)
#                             patch only (32k calib)    -4.7 [-7.3, -1.8]   +0.016   1.51 / 1.31
#                             patch + KD-LoRA, kd 1     -2.2 [-4.7, +0.5]   -0.017   1.30 / 1.14   (pure distillation)
#                             patch + KD-LoRA, kd 0.5   -3.2 [-5.8, -0.3]   -0.073   1.16 / 0.92   <- the recipe (64 steps of 4 blocks)
#                               same, lr 1e-3           -3.2 [-5.8, -0.5]   -0.048   1.17 / 0.94
#                               same, 256 steps of 1    -1.8 [-4.7, +0.8]   -0.070   1.17 / 0.92   (vs 64 of 4: +1.3 [-0.3, +2.8];
#                                                       compress's reported items: -3.1 vs -3.3, out of domain 1.22 vs 1.20)
#   262k tokens (thesis)      patch + KD-LoRA, kd 0.5   -3.7 [-6.3, -1.0]   -0.035   1.13 / 0.81   (4x the tokens: the acc_norm gap stays)
#   4k tokens (notebook 05)   patch + KD-LoRA, kd 1     -3.7 [-6.5, -0.8]   +0.019   1.42 / 1.27
#                             patch + LoRA (CE only)    -4.0 [-6.8, -1.2]   +0.056   1.32 / 1.08
#                             LoRA (CE only)            -6.0 [-8.7, -3.5]   +0.102   1.34 / 1.24
#                             patch + KD-LoRA, kd 0.5   -4.7 [-7.3, -2.0]   +0.018   1.31 / 1.10   <- the recipe
# Half cross-entropy keeps pure distillation's gold bits per byte and wins most of plain LoRA's
# out-of-domain perplexity; at 10 % (bench/crossover_probe.py, development blocks) it takes the recipe from
# 1.20 to 1.08 out of domain (ShortGPT + LoRA: 1.11). The acc_norm differences between these rows are
# inside their intervals. In-domain ratios below 1 are the instruct model adapting to plain prose.
# (tried and not adopted: full-weight KD at lr 1e-4, -4.2 / +0.078; chat-formatted training text, -5.3 / +0.10).
# Since session 15 compress trains on 32k tokens (it fits 15 minutes on the slow 2-core VMs); on compress's
# reported items (150 per task, seed 0, not the development ones above) 32k gave -4.0 [-7.3, -0.9], -0.046,
# 1.22 / 0.95 against 64k's -3.3 [-6.9, -0.2], -0.079, 1.20 / 0.91. Session 16, development items:
#   32k (compress default)    patch + KD-LoRA, kd 0.5   -2.3 [-5.2, +0.5]   -0.037   1.17 / 0.96   <- the recipe
#                               on 400 items per task   -2.1 [-4.1, -0.2]   -0.046                 (ARC-E -0.8, PIQA -2.2, HellaSwag -3.2)
#                             same, kd 1                -2.7 [-5.3, +0.2]   +0.005   1.32 / 1.15   (paired with the recipe:
#                                                       -0.3 [-2.0, +1.3] points, +0.042 bpb, 1.13x out of domain)
#                             kd 0.5 on the original's own chat answers (self-data distillation, arXiv:2410.09982;
#                             bench/self_data_probe.py)  -5.2 [-8.0, -2.5]   +0.132   1.38 / 1.24   (paired with the
#                                                       recipe: -2.8 [-5.2, -0.7] points, +0.168 bpb, 1.18x)
# and part-swap calibrated on those answers instead of wiki-leads removes 6.attn instead of 5.attn, the rest the
# same (bench/selection_data_probe.py): the cut hardly depends on the calibration text. Session 17, the residual
# stream distilled too (Minitron's intermediate states; online teacher, full-vocabulary KL; bench/hidden_probe.py):
#                             online full-vocabulary KL  -2.7 [-5.5, +0.2]   -0.035   1.17 / 0.97   (vs the recipe's cached top 64: -0.3 [-0.8, 0.0])
#                             + stream at the cut, w 1   -2.7 [-5.5, +0.2]   -0.035   1.17 / 0.97   (every item answered as in the line above)
#                             + every block's output, w 10 -2.3 [-5.0, +0.5] -0.031   1.21 / 0.99   (vs the recipe 0.0 [-1.2, +1.2])
# Session 18, another cut at the same size: BlockPruner's sub-block greedy (bench/budget_cut.py; blocks 3, 5, 6, the
# MLPs of 4 and 12, six more attentions), healed the same way:
#                             blockpruner's cut          -6.3 [-9.7, -3.2]   +0.152   1.43 / 1.27   (vs the recipe -4.0 [-7.3, -1.0])
# Session 19 (bench/interpolation_probe.py; a second part-swap round's cut through zero_shot_recipe_probe.py):
#                             recipe update x 0.75       -2.5 [-5.2, +0.3]   -0.034   1.20 / 0.99   (vs the recipe -0.2 [-0.8, +0.5])
#                             recipe update x 0.5        -3.0 [-5.7, -0.2]   -0.025   1.25 / 1.04   (vs the recipe -0.7 [-1.8, +0.5])
#                             7.attn instead of 5.attn   -2.0 [-4.8, +1.0]   -0.027   1.17 / 0.95   (vs the recipe +0.3 [-1.5, +2.0];
#                                                       gold probability +0.08 [+0.01, +0.15] points, +0.010 bpb)
#                               on 400 items per task   -1.8 [-3.8, +0.1]   -0.037                 (vs the recipe +0.25 [-1.1, +1.7];
#                                                       gold probability +0.06 [+0.01, +0.11], +0.009 bpb)
LORA_RANK = 32
OURS_HEAL_OPTIONS: tuple[tuple[str, Any], ...] = (("kd_weight", 0.5), ("lora_rank", LORA_RANK), ("lora_alpha", 2.0 * LORA_RANK))
DOMAINS = {"in": "in", "ood": "out"}  # table stem -> paired_perplexity_table's domain (in: corpus, out: ood_corpus)


@dataclass(frozen=True)
class Pipeline:
    """A peer's complete pipeline: a selection strategy, a healing recipe (``None``: none) and its options."""

    strategy: str
    recipe: str | None
    cite: str
    heal: tuple[tuple[str, Any], ...] = ()  # HealConfig fields the peer sets (e.g. LoRA targets)

    def __post_init__(self) -> None:
        get_strategy(self.strategy)
        if self.recipe is not None:
            parse_recipe(self.recipe)


PEERS: dict[str, Pipeline] = {
    "shortgpt": Pipeline("block-influence", "lora", "ShortGPT, Men et al. 2024, arXiv:2403.03853"),
    "gromov": Pipeline("angular-block", "lora", "Gromov et al. 2024, arXiv:2403.17887 (LoRA on the MLPs)",
                       (("lora_targets", MLP_MODULES),)),
    "sleb": Pipeline("sleb", None, "SLEB, Song et al. 2024, arXiv:2402.09025 (no healing)"),
    "replaceme": Pipeline("angular-block-all", "linear-patch", "ReplaceMe, Shopkhoev et al. 2025, arXiv:2505.02819"),
    "lu": Pipeline("reverse", "partial", "Lu et al. 2024, arXiv:2411.15558 (last 3 blocks + LM head)",
                   (("partial_scope", "last"), ("partial_width", 3), ("partial_train_head", True))),
}


@dataclass(frozen=True)
class RecipeStudyConfig:
    """Notebook 05's settings; validated on construction.

    Attributes:
        pruning: notebook 02's config; its cached curves give every strategy's choice at each k.
        healing: the shared healing settings (token budget, block length, batch, patch tokens,
            distillation targets, seed); its ``recipes``, ``variant_prefix`` and held-out settings
            (``eval_blocks``, ``eval_every``) are not used: ``evaluation`` measures every model.
        evaluation: how models are measured: perplexity blocks of both domains (``block_len``,
            ``ppl_blocks``, ``ood_corpus``) and zero-shot items; its variants are set per ratio.
        ks: blocks' worth removed (3, 6, 9 of SmolLM2's 30 = 10, 20, 30 % of the decoder).
        pipelines: ``PEERS`` keys and ``OURS``, in table order.
        ours: the FrankenLLaMA recipe, ``(strategy, recipe)`` (the profiles' ``OURS_DEFAULT``).
        zero_shot_ks: the ks whose models get the zero-shot evaluation (``None``: all).
        variant_prefix: variants are ``<prefix>-<percent>-<pipeline>``.
        n_boot: bootstrap resamples of every interval.
    """

    pruning: PruningConfig
    healing: HealingStageConfig
    evaluation: EvaluationConfig
    ours: tuple[str, str]  # set in one place: frankenllama.stages.profiles.OURS_DEFAULT
    ks: tuple[int, ...] = (3, 6, 9)
    pipelines: tuple[str, ...] = (*PEERS, OURS)
    zero_shot_ks: tuple[int, ...] | None = None
    variant_prefix: str = "recipe"
    n_boot: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("ks", "pipelines", "ours"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.zero_shot_ks is not None:
            object.__setattr__(self, "zero_shot_ks", tuple(self.zero_shot_ks))
        if not self.ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.ks):
            raise ValueError(f"ks must be positive numbers of blocks' worth, got {self.ks}")
        unknown = [p for p in self.pipelines if p not in PEERS and p != OURS]
        if unknown or not self.pipelines or len(set(self.pipelines)) != len(self.pipelines):
            raise ValueError(f"pipelines must be distinct names of {[*PEERS, OURS]}, got {self.pipelines}")
        if len(self.ours) != 2:
            raise ValueError(f"ours must be (strategy, recipe), e.g. ('part-swap', 'linear-patch+kd-lora'); "
                             f"got {self.ours}")
        self.pipeline(OURS)  # validates the strategy and the recipe
        if self.zero_shot_ks is not None and not set(self.zero_shot_ks) <= set(self.ks):
            raise ValueError(f"zero_shot_ks {self.zero_shot_ks} must be among ks {self.ks}")
        if self.evaluation.ood_corpus is None or self.evaluation.tasks is None:
            raise ValueError("the study needs evaluation.ood_corpus (out-of-domain perplexity) and evaluation.tasks")
        if self.n_boot < 100:
            raise ValueError(f"n_boot must be >= 100, got {self.n_boot}")
        variant_path(f"{self.variant_prefix}-10-{OURS}")  # validates the prefix

    def pipeline(self, name: str) -> Pipeline:
        """The pipeline called ``name``: a peer's, or the recipe of ``ours``."""
        if name == OURS:
            return Pipeline(self.ours[0], self.ours[1], "FrankenLLaMA (this workbook)", OURS_HEAL_OPTIONS)
        return PEERS[name]

    def zero_shot_at(self, k: int) -> bool:
        return self.zero_shot_ks is None or k in self.zero_shot_ks

    def evaluation_at(self, k: int, variants: tuple[str, ...]) -> EvaluationConfig:
        """The evaluation of ratio k: exactly its ``variants``; zero-shot only where ``zero_shot_at(k)``."""
        tasks = self.evaluation.tasks if self.zero_shot_at(k) else None
        return dataclasses.replace(self.evaluation, variants=tuple(variants), tasks=tasks)


def percent(k: int, layers: int) -> int:
    """k blocks' worth as a whole percent of the decoder's parameters (blocks of equal size)."""
    return round(100 * k / layers)


def variant_name(config: RecipeStudyConfig, k: int, layers: int, pipeline: str) -> str:
    return f"{config.variant_prefix}-{percent(k, layers)}-{pipeline}"


def applied_recipe(recipe: str | None, student) -> tuple[str | None, tuple[int, ...] | None]:
    """The recipe as it can run on ``student``, and the removed blocks its linear patch covers.

    The ReplaceMe patch stands in for a run of *whole* removed blocks and folds into the last
    projection of the block before it: a sub-layer choice that removed no whole block (or only a run
    at block 0) has no such run, and the patch step is dropped for it (recorded in the table).
    """
    if recipe is None or not parse_recipe(recipe)[0].name == "linear-patch":
        return recipe, None
    layers = patchable_layers(student)
    if not layers:
        rest = "+".join(s.name for s in parse_recipe(recipe)[1:])
        return rest or None, None
    return recipe, layers


def _selection(curves: pd.DataFrame, strategy: str, k: int) -> pd.Series:
    rows = curves[(curves.strategy == strategy) & (curves.k == k)]
    if rows.empty:
        raise ValueError(f"the pruning curves have no {strategy!r} at k = {k}: add the strategy to pruning.strategies "
                         "and k to its ks (sublayer_ks for sub-layer, search_ks for searching strategies)")
    return rows.iloc[0]


def run_pipeline(config: RecipeStudyConfig, name: str, k: int, curves: pd.DataFrame, data: dict) -> dict[str, Any]:
    """Prune with ``name``'s strategy at k blocks' worth, heal with its recipe, save the variant; its row."""
    teacher, tokenizer = shared_model(config.healing.model)
    pipe, L = config.pipeline(name), num_layers(teacher)
    row = _selection(curves, pipe.strategy, k)
    select_s = float(curves[curves.strategy == pipe.strategy].select_seconds.max())  # all of the strategy's ks
    layer_wise = get_strategy(pipe.strategy).granularity == "layer"
    student = drop_layers(teacher, row.units) if layer_wise else prune_sublayers(teacher, row.units)
    recipe, patched = applied_recipe(pipe.recipe, student)
    variant = variant_name(config, k, L, name)
    meta = {"study": "recipe", "pipeline": name, "k": k, "strategy": pipe.strategy, "recipe": recipe,
            "removed_units": list(row.units), "removed_layers": list(row.layers), "base_model": config.healing.model}
    if recipe is None:  # no healing: the pruned model itself, saved again only when the selection changed
        if not (_saved_meta(variant) == to_jsonable(meta) and intact(variant_path(variant))):
            save_variant(variant, student, tokenizer, meta, seed=config.seed)
        heal_s, tokens, calib = 0.0, 0, 0
    else:
        base = dataclasses.replace(config.healing.heal_config(), recipe=recipe, eval_every=0, patch_layers=patched,
                                   **dict(pipe.heal))
        # no held-out blocks: the evaluation stage measures every model once, on more blocks, in both domains
        result = heal(student, tokenizer, base, train_blocks=data["train"], teacher=teacher, calib_blocks=data["calib"],
                      out_dir=variant_path(variant), meta=meta, teacher_streams=data["streams"], load_cached=False)
        heal_s, tokens, calib = result.wall_time_s, result.tokens_seen, result.calib_tokens
        result.model = None
    del student
    return {"k": k, "percent": percent(k, L), "pipeline": name, "variant": variant, "strategy": pipe.strategy,
            "recipe": recipe or "none", "removed": list(row.layers) if layer_wise else describe(row.units),
            "params_M": row.num_params / 1e6, "train_tokens": tokens, "calib_tokens": calib,
            "select_s": select_s, "heal_s": heal_s, "cite": pipe.cite}


def _saved_meta(variant: str) -> dict | None:
    found = [v.meta for v in list_variants() if v.name == variant]
    return found[0] if found else None


@dataclass
class RecipeStudy:
    """What notebook 05 shows: one row per (k, pipeline) and the evaluation stage's result per k."""

    config: RecipeStudyConfig
    layers: int  # blocks of the original
    decoder_params: int
    params: int  # of the original
    runs: pd.DataFrame
    evaluations: dict[int, dict[str, Any]] = field(default_factory=dict)  # k -> evaluation_stage result


def run_pipelines(config: RecipeStudyConfig, ks: tuple[int, ...] | None = None,
                  pipelines: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Run (or read back: healed runs are cached by fingerprint) each pipeline at each k; ``run_pipeline``'s rows.

    ``ks`` / ``pipelines`` default to the config's. Notebook 06 asks for the recipe alone at its ks
    and gets the very models notebook 05 saved.
    """
    ks, pipelines = tuple(ks or config.ks), tuple(pipelines or config.pipelines)
    missing = [k for k in ks if k not in config.pruning.ks]
    if missing:  # checked here, not in the config: a profile whose pruning ks were overridden still builds
        raise ValueError(f"ks {missing} are not points of the pruning curves (pruning.ks = {config.pruning.ks}); "
                         "add them to the pruning config (and to its sublayer_ks / search_ks)")
    seed_everything(config.seed)
    teacher, tokenizer = shared_model(config.healing.model)
    curves = pruning_stage(config.pruning)
    h = config.healing
    data = {"train": h.data("train").blocks(tokenizer, teacher), "calib": h.data("calib").blocks(tokenizer, teacher),
            "streams": TeacherStreams()}  # one teacher pass over the calibration blocks for every linear patch
    return [run_pipeline(config, name, k, curves, data) for k in ks for name in pipelines]


def recipe_stage(config: RecipeStudyConfig) -> RecipeStudy:
    """Run every pipeline at every k (cached variants), then measure perplexity and zero-shot items."""
    runs = pd.DataFrame(run_pipelines(config))
    teacher, _ = shared_model(config.healing.model)
    runs["wall_s"] = runs.select_s + runs.heal_s
    # one call per ratio: its models only in memory at once (the stage times them side by side)
    evaluations = {k: evaluation_stage(config.evaluation_at(k, tuple(runs[runs.k == k].variant))) for k in config.ks}
    decoder = int(unit_params(teacher, "layer").sum())
    return RecipeStudy(config, num_layers(teacher), decoder, count_params(teacher), runs, evaluations)


# --------------------------------------------------------------------------------------------------
# the study's table and the text generated from it

ZERO_SHOT = {"gold_bpb": "bpb", "acc_norm": "acc_norm"}  # paired zero-shot metrics and their column stems


def _ours(runs: pd.DataFrame, k: int) -> str | None:
    found = runs[(runs.k == k) & (runs.pipeline == OURS)].variant
    return found.iloc[0] if len(found) else None


def study_table(study: RecipeStudy) -> pd.DataFrame:
    """One row per (k, pipeline) plus the original: sizes, perplexity ratios and zero-shot differences, with intervals.

    Perplexity (``ppl_in`` / ``ppl_ood``) and its ratio to the original (``*_x``) and to the
    FrankenLLaMA recipe at the same k (``*_vs_ours_x``), each with ``_low`` / ``_high`` (95 % paired
    bootstrap over eval blocks); zero-shot differences (``bpb``: gold answer bits per byte, lower is
    better; ``acc_norm``: points) to the original and to the recipe, each with its interval
    (items resampled within tasks); wall time (selection + healing, seconds).
    """
    c, runs = study.config, study.runs
    first = next(iter(study.evaluations.values()))["results"][BASELINE]
    rows = [{"percent": 0, "pipeline": BASELINE, "params_M": study.params / 1e6, "removed_%": 0.0,
             "ppl_in": first["perplexity"], "ppl_ood": first["perplexity_ood"]}]
    for k, stage in study.evaluations.items():
        ours = _ours(runs, k)
        ppl = {(d, vs): paired_perplexity_table(stage, dom, base, c.n_boot, c.seed)
               for d, dom in DOMAINS.items() for vs, base in (("", BASELINE), ("_vs_ours", ours)) if base is not None}
        for r in runs[runs.k == k].itertuples():
            row = {"percent": r.percent, "pipeline": r.pipeline, "strategy": r.strategy, "recipe": r.recipe,
                   "params_M": r.params_M, "removed_%": 100 * (study.params - 1e6 * r.params_M) / study.decoder_params}
            for (d, vs), t in ppl.items():
                if vs and r.variant == ours:
                    continue
                x = t.loc[r.variant]
                if not vs:
                    row[f"ppl_{d}"] = x["ppl"]
                row.update({f"ppl_{d}{vs}_x": x["ppl_ratio"], f"ppl_{d}{vs}_low": x["ratio_low"],
                            f"ppl_{d}{vs}_high": x["ratio_high"]})
            row.update(_zero_shot(study, k, r.variant, ours))
            row.update({"train_tokens": r.train_tokens, "select_s": r.select_s, "heal_s": r.heal_s, "wall_s": r.wall_s})
            rows.append(row)
    table = pd.DataFrame(rows)
    last = ["train_tokens", "select_s", "heal_s", "wall_s"]  # the costs after the measures
    return table[[c for c in table.columns if c not in last] + last]


def _zero_shot(study: RecipeStudy, k: int, variant: str, ours: str | None) -> dict[str, float]:
    """Paired zero-shot differences of ``variant`` to the original and to ``ours`` (empty when not evaluated at k)."""
    stage, c = study.evaluations[k], study.config
    if not c.zero_shot_at(k):
        return {}
    out = {}
    for metric, stem in ZERO_SHOT.items():
        for vs, baseline in (("orig", BASELINE), ("ours", ours)):
            if baseline is None or baseline == variant or baseline not in stage["results"]:
                continue
            t = paired_table(stage, metric, baseline, c.n_boot, c.seed).loc[variant]
            out.update({f"{stem}_{vs}": t["diff"], f"{stem}_{vs}_low": t["low"], f"{stem}_{vs}_high": t["high"]})
    return out


def _verdict(low: float, high: float, null: float, better_low: bool) -> str | None:
    """'better' / 'worse' when the interval excludes ``null`` (lower is better when ``better_low``), else None."""
    if low <= null <= high:
        return None
    below = high < null
    return "better" if below == better_low else "worse"


def study_summary(table: pd.DataFrame) -> str:
    """Markdown: at each removal ratio, how the FrankenLLaMA recipe compares with each peer, by the intervals only.

    A peer "is beaten" on a measure only where the 95 % interval of the paired difference excludes
    0 (ratio 1 for perplexity); otherwise the text says the difference is not resolved.
    """
    measures = [("ppl_ood_vs_ours", "out-of-domain perplexity", 1.0, "{:.2f}×"),
                ("ppl_in_vs_ours", "in-domain perplexity", 1.0, "{:.2f}×"),
                ("bpb_ours", "gold bits per byte", 0.0, "{:+.3f}"), ("acc_norm_ours", "acc_norm", 0.0, "{:+.1f} pts")]
    lines = []
    for pct, group in table[table.pipeline != BASELINE].groupby("percent"):
        lines.append(f"\n**{pct} % of the decoder removed** (each peer relative to the recipe at the same size)\n")
        for r in group[group.pipeline != OURS].itertuples():
            wins, losses, open_ = [], [], []
            for stem, label, null, fmt in measures:
                value = getattr(r, f"{stem}_x" if stem.startswith("ppl") else stem, np.nan)
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    continue
                low, high = getattr(r, f"{stem}_low"), getattr(r, f"{stem}_high")
                # every column is peer relative to ours: the peer is worse when its value is higher, except acc_norm
                peer = _verdict(low, high, null, better_low=stem != "acc_norm_ours")
                text = f"{label} {fmt.format(value)} [{fmt.format(low)}, {fmt.format(high)}]"
                (open_ if peer is None else losses if peer == "better" else wins).append(text)
            parts = []
            if wins:
                parts.append("the recipe beats it on " + "; ".join(wins))
            if losses:
                parts.append("it beats the recipe on " + "; ".join(losses))
            if open_:
                parts.append("not resolved (interval includes no difference): " + "; ".join(open_))
            lines.append(f"* vs **{r.pipeline}** ({r.strategy} + {r.recipe}): " + "; ".join(parts) + ".")
    return "\n".join(lines + [half_widths(table)])


def half_widths(table: pd.DataFrame) -> str:
    """The resolution reached: median half-width of each interval against the original, over the study's rows."""
    parts = []
    for stem, label, fmt in (("ppl_in", "in-domain PPL ratio", "{:.3f}"), ("ppl_ood", "out-of-domain PPL ratio", "{:.3f}"),
                             ("bpb_orig", "gold bits per byte", "{:.4f}"), ("acc_norm_orig", "acc_norm (points)", "{:.1f}")):
        if f"{stem}_low" in table and table[f"{stem}_low"].notna().any():
            half = ((table[f"{stem}_high"] - table[f"{stem}_low"]) / 2).median()
            parts.append(f"{label} ±{fmt.format(half)}")
    return "\nMedian 95 % interval half-widths against the original: " + ", ".join(parts) + "." if parts else ""
