"""The workbook's stages as cached, config-driven functions that the notebooks call.

Each stage takes one frozen, validated config dataclass, seeds itself at entry, and stores its
result under a key derived from that config (``frankenllama.cache``), with the config, seed and
package versions beside it. A later notebook that asks for the same config reads the cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from frankenllama.cache import cached_arrays, cached_json, seed_everything
from frankenllama.data import context_length, load_corpus, token_blocks
from frankenllama.models import DEFAULT_MODEL, load_model, num_layers
from frankenllama.perplexity import perplexity
from frankenllama.selection import STRATEGIES, check_k, select_layers
from frankenllama.similarity import LayerSimilarity, layer_similarity
from frankenllama.surgery import drop_layers


@dataclass(frozen=True)
class DataConfig:
    """Which token blocks a stage reads: ``n_blocks`` blocks of ``block_len`` tokens of one split."""

    corpus: str = "wiki-leads"  # registry name or path to a text file
    split: str = "calib"
    block_len: int = 256
    n_blocks: int = 32

    def __post_init__(self) -> None:
        if self.block_len < 2 or self.n_blocks < 1:
            raise ValueError(f"need block_len >= 2 and n_blocks >= 1, got {self.block_len}, {self.n_blocks}")

    def blocks(self, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None = None) -> torch.Tensor:
        limit = None if model is None else context_length(model)
        texts = load_corpus(self.corpus, self.split)  # type: ignore[arg-type]
        return token_blocks(tokenizer, texts, self.block_len, max_blocks=self.n_blocks, context_length=limit)


@lru_cache(maxsize=2)
def shared_model(name: str, dtype: str = "auto", device: str = "auto"):
    """One loaded copy of a model per process, for stages that only read it."""
    return load_model(name, dtype=dtype, device=device)


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

    return LayerSimilarity.from_arrays(cached_arrays("similarity", config, compute, seed=config.seed))


@dataclass(frozen=True)
class PruningConfig:
    """A pruning curve: eval perplexity after removing k blocks, for each strategy and k."""

    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    eval_data: DataConfig = field(default_factory=lambda: DataConfig(split="eval", n_blocks=16))
    strategies: tuple[str, ...] = ("block-influence", "angular-block")
    ks: tuple[int, ...] = tuple(range(0, 13))
    batch_size: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown:
            raise KeyError(f"unknown strategies {unknown}; choose from {sorted(STRATEGIES)}")
        if any(k < 0 for k in self.ks):
            raise ValueError(f"ks must be >= 0, got {self.ks}")


def pruning_stage(config: PruningConfig) -> pd.DataFrame:
    """Rows ``(strategy, k, layers, eval_ppl, num_params)``; k = 0 is the unpruned model (cached)."""

    def compute():
        seed_everything(config.seed)
        model, tokenizer = shared_model(config.similarity.model)
        for k in config.ks:
            if k:
                check_k(k, num_layers(model))
        similarity = similarity_stage(config.similarity)
        eval_ids = config.eval_data.blocks(tokenizer, model)
        base = perplexity(model, eval_ids, batch_size=config.batch_size)
        rows, seen = [], {}
        for strategy in config.strategies:
            for k in config.ks:
                layers = select_layers(similarity, k, strategy) if k else []
                key = tuple(layers)
                if key not in seen:
                    pruned = drop_layers(model, layers) if k else model
                    ppl = base if not k else perplexity(pruned, eval_ids, batch_size=config.batch_size)
                    seen[key] = (ppl, sum(p.numel() for p in pruned.parameters()))
                ppl, params = seen[key]
                rows.append({"strategy": strategy, "k": k, "layers": layers, "eval_ppl": ppl, "num_params": params})
        return rows

    return pd.DataFrame(cached_json("pruning", config, compute, seed=config.seed))
