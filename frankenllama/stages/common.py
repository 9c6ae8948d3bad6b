"""What every stage shares: the token blocks it reads and one loaded copy of each model per process."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from frankenllama.data import context_length, load_corpus, token_blocks
from frankenllama.models import load_model


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
