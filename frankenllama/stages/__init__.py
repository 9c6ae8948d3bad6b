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
"""

from frankenllama.stages.common import DataConfig, shared_model
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

__all__ = ["STUDY_KS", "DataConfig", "PruningConfig", "ScoringConfig", "SimilarityConfig", "StudyConfig",
           "best_selection", "best_strategies", "best_summary", "pruning_stage", "save_pruned_variants",
           "scoring_context", "shared_model", "similarity_stage", "study_stage"]
