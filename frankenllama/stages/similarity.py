"""Notebook 01's stage: residual-stream similarity statistics of the calibration blocks (cached)."""

from __future__ import annotations

from dataclasses import dataclass, field

from frankenllama.cache import cached_arrays, seed_everything
from frankenllama.models import DEFAULT_MODEL
from frankenllama.similarity import LayerSimilarity, layer_similarity
from frankenllama.stages.common import DataConfig, shared_model

CODE = ("frankenllama.similarity", "frankenllama.data", "frankenllama.models")  # what computes the cached result


@dataclass(frozen=True)
class SimilarityConfig:
    model: str = DEFAULT_MODEL
    data: DataConfig = field(default_factory=DataConfig)
    batch_size: int = 8
    seed: int = 0


def similarity_stage(config: SimilarityConfig) -> LayerSimilarity:
    """Layer-similarity statistics of ``config.model`` on its calibration blocks (cached)."""

    def compute():
        seed_everything(config.seed)
        model, tokenizer = shared_model(config.model)
        ids = config.data.blocks(tokenizer, model)
        return layer_similarity(model, ids, batch_size=config.batch_size, progress=True).to_arrays()

    return LayerSimilarity.from_arrays(cached_arrays("similarity", config, compute, seed=config.seed, code=CODE))
