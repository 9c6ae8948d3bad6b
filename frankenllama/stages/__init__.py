"""The workbook's stages: one cached, config-driven computation per step of a notebook.

Each stage takes one frozen, validated config dataclass, seeds itself at entry, and stores its
result under a key derived from that config and from the code that computes it
(``frankenllama.cache``), with the config, seed, code version and package versions beside it. A
later notebook that asks for the same config reads the cache. ``frankenllama.stages.profiles``
builds every stage's config for a named profile ("default", "smoke", "thesis").

| notebook | stage module |
|---|---|
| 01 | ``similarity`` (``similarity_stage``) |
| 02 | ``pruning`` (``pruning_stage``, ``best_selection``, ``save_pruned_variants``), ``study`` (``study_stage``) |
| 03 | ``healing`` (``healing_stage``: heals the cut ``best_selection`` hands over) |
| 04 | ``evaluation`` (``evaluation_stage``, ``comparison_table``) |
"""

from frankenllama.stages.common import DataConfig, shared_model
from frankenllama.stages.evaluation import EvaluationConfig, comparison_table, evaluation_stage
from frankenllama.stages.healing import HealingStageConfig, healing_stage
from frankenllama.stages.pruning import (
    STUDY_KS,
    PruningConfig,
    ScoringConfig,
    best_selection,
    best_strategies,
    best_summary,
    pruning_stage,
    save_pruned_variants,
    scoring_context,
)
from frankenllama.stages.similarity import SimilarityConfig, similarity_stage
from frankenllama.stages.study import StudyConfig, study_stage

__all__ = ["STUDY_KS", "DataConfig", "EvaluationConfig", "HealingStageConfig", "PruningConfig", "ScoringConfig",
           "SimilarityConfig", "StudyConfig", "comparison_table", "evaluation_stage", "healing_stage",
           "best_selection", "best_strategies", "best_summary", "pruning_stage", "save_pruned_variants",
           "scoring_context", "shared_model", "similarity_stage", "study_stage"]
