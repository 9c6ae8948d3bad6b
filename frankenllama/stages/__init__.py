"""The workbook's stages: one cached, config-driven computation per step of a notebook.

Each stage takes one frozen, validated config dataclass, seeds itself at entry, and stores its
result under a key derived from that config and from the code that computes it
(``frankenllama.cache``), with the config, seed, code version and package versions beside it. A
later notebook that asks for the same config reads the cache.
"""

from frankenllama.stages.common import DataConfig, shared_model
from frankenllama.stages.pruning import *  # noqa: F401,F403  (split into pruning / study below)
from frankenllama.stages.similarity import SimilarityConfig, similarity_stage
