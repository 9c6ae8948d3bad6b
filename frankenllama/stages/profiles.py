"""Named profiles: every stage's config for one run of the workbook, built in one place.

A profile fixes every setting of every notebook: ``"default"`` fits the whole pipeline on a
2-core CPU in about half an hour; ``"smoke"`` runs every notebook end to end in a minute or two
(tests and CI); ``"thesis"`` uses every evaluation item and larger calibration and healing budgets
(meant for a GPU). Seeds are the configs' own (0); override them like any field (``"pruning.seed"``). Configs are built in dependency order — similarity → pruning → study →
healing → evaluation → deployment — so a later stage always reads the results an earlier one cached: notebook 02
measures on notebook 01's similarity statistics, notebook 03 heals the cut notebook 02 found.

A notebook's parameters cell names the profile and overrides single fields, with dotted paths
that start with the stage: ``{"pruning.eval_data.n_blocks": 32}``. An override of an early
stage reaches every later stage that contains it (the pruning config holds the similarity config).

    from frankenllama.stages.profiles import build
    profile = build("default", model="smollm2-135m", overrides={"study.n_boot": 2000})
    curves = pruning_stage(profile.pruning)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from frankenllama.eval.efficiency import SpeedConfig
from frankenllama.eval.tasks import DEFAULT_TASKS
from frankenllama.eval.zero_shot import TaskEvalConfig
from frankenllama.models import DEFAULT_MODEL
from frankenllama.selection import STRATEGIES
from frankenllama.stages.common import DataConfig
from frankenllama.stages.deployment import DeploymentConfig
from frankenllama.stages.evaluation import EvaluationConfig
from frankenllama.stages.healing import HealingStageConfig
from frankenllama.stages.pruning import STUDY_KS, PruningConfig, ScoringConfig
from frankenllama.stages.recipe import LORA_RANK, OURS_RECIPE, OURS_STRATEGY, RecipeStudyConfig
from frankenllama.stages.similarity import SimilarityConfig
from frankenllama.stages.study import StudyConfig

PROFILES: tuple[str, ...] = ("default", "smoke", "thesis")
# The FrankenLLaMA recipe of notebook 05 and the compress command, (selection strategy, healing recipe): the one
# place it is set (notebook 05's study decides it).
OURS_DEFAULT = (OURS_STRATEGY, OURS_RECIPE)  # frankenllama.stages.recipe: the recipe compress also uses
# the default profile's recipes of notebook 03 (the thesis and smoke profiles run every one of RECIPES)
DEFAULT_RECIPES = ("linear-patch", "lora", "kd-lora", "linear-patch+lora")
HEAL_K = 6  # notebooks 03 onwards heal the best strategy's choice at this k (20 % of SmolLM2's 30 blocks)


class UnknownProfileError(KeyError):
    """A profile name that is not one of ``PROFILES``."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Profile:
    """Every stage config of one named profile; ``heal_k`` is the k whose best cut the later notebooks heal.

    ``study_variants_only``: notebook 04 compares the original with the study's variants only (the
    unhealed best cut at ``heal_k`` and its healed variants; ``stages.evaluation.evaluation_config``).
    """

    name: str
    similarity: SimilarityConfig
    pruning: PruningConfig
    study: StudyConfig
    heal_k: int
    healing: HealingStageConfig
    evaluation: EvaluationConfig
    recipe: RecipeStudyConfig  # notebook 05: the recipe against the peers' pipelines
    deployment: DeploymentConfig  # its cuts are filled in by the notebook (``with_best_cuts``)
    study_variants_only: bool = False

    @property
    def model(self) -> str:
        return self.similarity.model


# The settings of each profile, by stage; everything not named here is the config dataclass's default.
_SETTINGS: dict[str, dict[str, Any]] = {
    "default": dict(
        calib=(256, 64),  # (block_len, blocks) of the similarity statistics: 16k tokens
        score=(128, 8, 4),  # (block_len, blocks, of which sub-block measurements use) for scores and searches
        eval=(256, 12),  # held-out blocks of the pruning curves
        ks=(0, *STUDY_KS),  # 10, 20, 30 % of SmolLM2's blocks: the ratios of notebooks 05 and 06
        sublayer_ks=(0, *STUDY_KS), search_ks=STUDY_KS, study_ks=STUDY_KS,
        shortlist=8, strategies=tuple(s for s in STRATEGIES if s != "blockpruner"),
        study=dict(n_boot=1000, draws=6, sizes=(2, 4), search_sizes=(4,), search_draws=1),
        heal_k=HEAL_K,
        # 8k tokens per recipe (8 steps of 4 x 256): what the 30-minute pipeline leaves notebook 03. Four of the
        # six recipes: kd-full and partial recovered least in both domains when all six ran (README, notebook 03);
        # the thesis profile runs all six
        healing=dict(tokens=8192, block_len=256, batch_size=4, eval_every=4, eval_blocks=6, patch_tokens=8192,
                     recipes=DEFAULT_RECIPES),
        # fewer variants (the study's: study_variants_only), the same items for every model: 50 per task of
        # three tasks, sized so the continuous metrics' paired intervals resolve a third of the unhealed model's
        # loss (notebook 04 checks it: with 150 per task the gold_bpb half-width was a tenth of that loss, so a
        # third of the items keeps it under a fifth); 16 blocks of each text domain for perplexity
        evaluation=dict(tasks=("arc_easy", "piqa", "hellaswag"), limit=50, block_len=256, ppl_blocks=16,
                        fidelity_blocks=4, speed=SpeedConfig((1, 8), 64, 16, 2, warmup=1, threads=1),
                        max_new_tokens=32, variant_prefix="", exclude_prefix=("smoke-", "recipe-", "deploy-"), max_variants=None,
                        study_variants_only=True),
        # notebook 05 (9 min on the Intel VM, 13 min on the slowest AMD one; README): 4k training tokens per
        # trained pipeline (8 steps of 4 x 128), LoRA of the recipe's rank for every LoRA pipeline (the peers get the
        # same adapter size), 32k calibration tokens for every linear patch (compress's; forward passes only, ~20 s
        # a fit; with 4k the 576 x 576 least-squares map overfits wiki-leads: the recipe's out-of-domain perplexity
        # at 20 % was 1.90x the original's, 1.58x with 32k), perplexity on 6 blocks of 256 tokens per domain at
        # every ratio, zero-shot (40 items x 3 tasks) at 20 % only; no held-out perplexity inside the heals and no
        # fidelity (the evaluation measures each model once; the notebook shows no KL)
        recipe=dict(ks=STUDY_KS, ours=OURS_DEFAULT, zero_shot_ks=(6,), n_boot=1000,
                    healing=dict(tokens=4096, block_len=128, batch_size=4, patch_tokens=32768, lora_rank=LORA_RANK),
                    evaluation=dict(tasks=("arc_easy", "piqa", "hellaswag"), limit=40, block_len=256, ppl_blocks=6)),
        # 10 / 20 / 30 % of SmolLM2's 30 blocks: the best whole-block cut unhealed, and the recipe at the same size
        # as notebook 05 made it (read back, nothing healed twice); ~2 min of notebook 06 on an idle machine
        deployment=dict(prune_ks=STUDY_KS, qtypes=("f16", "q8_0", "q4_0"), data=(128, 8), ood=(128, 4),
                        prompt_tokens=128, decode_tokens=32, repeats=2, threads=2, eval_threads=2),
    ),
    "smoke": dict(
        calib=(64, 4), score=(64, 2, 2), eval=(64, 2), ks=(0, 1, 2),
        sublayer_ks=(0, 1, 2), search_ks=(1, 2), study_ks=(1,),
        shortlist=8, strategies=tuple(s for s in STRATEGIES if s != "blockpruner"),
        study=dict(n_boot=50, draws=3, sizes=(1, 2), search_sizes=(1,), search_draws=1),
        heal_k=2,
        healing=dict(tokens=128, block_len=64, batch_size=2, eval_every=1, eval_blocks=2, patch_tokens=1024,
                     variant_prefix="smoke-healed"),
        evaluation=dict(tasks=("arc_easy", "piqa"), limit=4, block_len=64, ppl_blocks=2, fidelity_blocks=1,
                        speed=SpeedConfig((1, 2), 16, 3, 1, warmup=0, threads=1), max_new_tokens=8,
                        variant_prefix="smoke-", exclude_prefix=None, max_variants=1),
        recipe=dict(ks=(1, 2), ours=OURS_DEFAULT, zero_shot_ks=(2,), n_boot=200, variant_prefix="smoke-recipe",
                    healing=dict(tokens=128, block_len=64, batch_size=2, patch_tokens=1024, lora_rank=LORA_RANK),
                    evaluation=dict(tasks=("arc_easy", "piqa"), limit=4, block_len=64, ppl_blocks=2)),
        deployment=dict(prune_ks=(2,), qtypes=("f16", "q4_0"), data=(32, 2), ood=(32, 1),
                        prompt_tokens=16, decode_tokens=4, repeats=1, threads=1),
    ),
    "thesis": dict(
        calib=(256, 256), score=(256, 32, 32), eval=(256, 64), ks=tuple(range(0, 16)),
        sublayer_ks=tuple(range(0, 13, 3)), search_ks=tuple(range(1, 13)), study_ks=STUDY_KS,
        shortlist=None, strategies=tuple(STRATEGIES),
        study=dict(n_boot=2000, draws=20, sizes=(4, 8, 16), search_sizes=(8,), search_draws=4),
        heal_k=HEAL_K,
        healing=dict(tokens=262144, block_len=512, batch_size=8, eval_every=16, eval_blocks=64, patch_tokens=65536),
        evaluation=dict(tasks=DEFAULT_TASKS, limit=None, block_len=512, ppl_blocks=64, fidelity_blocks=16,
                        speed=SpeedConfig((1, 8), 128, 32, 5, warmup=2, threads=None), max_new_tokens=64,
                        variant_prefix="", exclude_prefix=("smoke-", "recipe-", "deploy-"), max_variants=None),
        recipe=dict(ks=STUDY_KS, ours=OURS_DEFAULT, zero_shot_ks=None, n_boot=2000,
                    healing=dict(tokens=65536, block_len=512, batch_size=8, patch_tokens=65536, lora_rank=LORA_RANK),
                    evaluation=dict(tasks=DEFAULT_TASKS, limit=None, block_len=512, ppl_blocks=64)),
        deployment=dict(prune_ks=STUDY_KS, qtypes=("f16", "q8_0", "q4_0"), data=(512, 64), ood=(512, 32),
                        prompt_tokens=512, decode_tokens=128, repeats=5, threads=4),
    ),
}


def _replace_path(config: Any, path: list[str], value: Any, full: str) -> Any:
    """``config`` with the field at dotted ``path`` set to ``value`` (lists become tuples where a tuple was)."""
    name = path[0]
    if not dataclasses.is_dataclass(config) or name not in {f.name for f in dataclasses.fields(config)}:
        fields = sorted(f.name for f in dataclasses.fields(config)) if dataclasses.is_dataclass(config) else []
        raise KeyError(f"override {full!r}: {type(config).__name__} has no field {name!r}; its fields are {fields}")
    current = getattr(config, name)
    if len(path) > 1:
        value = _replace_path(current, path[1:], value, full)
    elif isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    return dataclasses.replace(config, **{name: value})


def _apply(config: Any, stage: str, overrides: dict[str, Any]) -> Any:
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head == stage and rest:
            config = _replace_path(config, rest.split("."), value, key)
    return config


def build(name: str = "default", model: str | None = None, corpus: str | None = None,
          overrides: dict[str, Any] | None = None) -> Profile:
    """The stage configs of profile ``name`` for ``model`` on ``corpus``, with dotted-path ``overrides``."""
    if name not in _SETTINGS:
        raise UnknownProfileError(f"unknown profile {name!r}; choose one of {PROFILES}")
    s, overrides = _SETTINGS[name], dict(overrides or {})
    stages = ("similarity", "pruning", "study", "heal_k", "healing", "evaluation", "recipe", "deployment")
    unknown = [key for key in overrides if key.partition(".")[0] not in stages]
    if unknown:
        raise KeyError(f"overrides {unknown} name no stage; start each with one of {stages}")
    model, corpus = model or DEFAULT_MODEL, corpus or "wiki-leads"
    similarity = _apply(SimilarityConfig(model, DataConfig(corpus, "calib", *s["calib"]), batch_size=8),
                        "similarity", overrides)
    score_len, score_blocks, sublayer_blocks = s["score"]
    pruning = _apply(PruningConfig(
        similarity=similarity,
        scoring=ScoringConfig(DataConfig(corpus, "calib", score_len, score_blocks), batch_size=4,
                              shortlist=s["shortlist"], sublayer_blocks=sublayer_blocks),
        eval_data=DataConfig(corpus, "eval", *s["eval"]), strategies=s["strategies"], ks=s["ks"],
        sublayer_ks=s["sublayer_ks"], search_ks=s["search_ks"], batch_size=4), "pruning", overrides)
    study = _apply(StudyConfig(pruning=pruning, ks=s["study_ks"], **s["study"]), "study", overrides)
    heal_k = int(overrides.get("heal_k", s["heal_k"]))
    healing = _apply(HealingStageConfig(model=model, corpus=corpus, **s["healing"]), "healing", overrides)
    e = dict(s["evaluation"])
    tasks = TaskEvalConfig(e.pop("tasks"), limit=e.pop("limit"), chat_template=True)
    study_only = e.pop("study_variants_only", False)
    evaluation = _apply(EvaluationConfig(model=model, tasks=tasks, corpus=corpus, **e), "evaluation", overrides)
    recipe = _apply(_recipe_config(s["recipe"], model, corpus, pruning), "recipe", overrides)
    deployment = _apply(_deployment(s["deployment"], healing, recipe, corpus), "deployment", overrides)
    return Profile(name, similarity, pruning, study, heal_k, healing, evaluation, recipe, deployment, study_only)


def _recipe_config(settings: dict[str, Any], model: str, corpus: str, pruning: PruningConfig) -> RecipeStudyConfig:
    """Notebook 05's config: its own healing budget, perplexity blocks and zero-shot items (no generations)."""
    r = dict(settings)
    healing = HealingStageConfig(model=model, corpus=corpus, variant_prefix=None, **r.pop("healing"))
    e = dict(r.pop("evaluation"))
    tasks = TaskEvalConfig(e.pop("tasks"), limit=e.pop("limit"), chat_template=True)
    speed = SpeedConfig((1,), 8, 2, 1, warmup=0, threads=1)  # the evaluation stage always times; keep it cheap
    # no fidelity (notebook 05 shows no KL or top-1 agreement), no generations
    evaluation = EvaluationConfig(model=model, tasks=tasks, corpus=corpus, fidelity_blocks=0, speed=speed, prompts=(),
                                  max_new_tokens=1, **e)  # its variants are set per ratio (RecipeStudyConfig)
    return RecipeStudyConfig(pruning=pruning, healing=healing, evaluation=evaluation, **r)


def _deployment(settings: dict[str, Any], healing: HealingStageConfig, recipe: RecipeStudyConfig,
                corpus: str) -> DeploymentConfig:
    """The deployment config; its healed rows are the recipe's models of notebook 05 at the same ks."""
    d = dict(settings)
    return DeploymentConfig(model=healing.model, recipe=recipe, data=DataConfig(corpus, "eval", *d.pop("data")),
                            ood_data=DataConfig("olmo-passages", "eval", *d.pop("ood")), **d)
