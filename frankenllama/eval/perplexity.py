"""Perplexity on fixed-length token blocks.

Protocol: the input is an ``(N, T)`` tensor of token blocks from ``frankenllama.data.token_blocks``
(non-overlapping windows of a document stream; no sliding window, no carried-over context). Each
block is scored independently; every position except the first is predicted from the tokens before
it inside the block, so a block contributes ``T - 1`` predictions (the first token, BOS where the
tokenizer uses one, is context only). Perplexity is ``exp`` of the mean negative log-likelihood over
all predictions of all blocks (a token-weighted mean, not a mean of per-block perplexities). Blocks
are processed ``batch_size`` at a time; an optional ``attention_mask`` excludes padded positions.
Log-probabilities are computed in float32 whatever the model's dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from frankenllama.data import context_length
from frankenllama.models import model_device


def check_blocks(model: nn.Module, input_ids: torch.Tensor) -> None:
    if input_ids.dim() != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] < 2:
        raise ValueError(f"expected token blocks of shape (N >= 1, T >= 2), got {tuple(input_ids.shape)}")
    limit = context_length(model)
    if limit is not None and input_ids.shape[1] > limit:
        raise ValueError(
            f"block length {input_ids.shape[1]} exceeds the model's context of {limit} tokens; "
            f"cut the text into blocks of at most {limit}"
        )


@torch.inference_mode()
def block_nll(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    batch_size: int = 4,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block sums of next-token negative log-likelihoods (nats, float64) and prediction counts, ``(N,)`` each.

    The per-block values are what a paired comparison of two models resamples (the same blocks for
    both, ``frankenllama.eval.paired``); ``token_nll`` is their total.
    """
    check_blocks(model, input_ids)
    device = model_device(model)
    sums, counts = [], []
    for start in tqdm(range(0, len(input_ids), batch_size), desc="perplexity", disable=not progress, leave=False):
        ids = input_ids[start : start + batch_size].to(device)  # (B, T)
        mask = None if attention_mask is None else attention_mask[start : start + batch_size].to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()  # (B, T-1, V)
        # Not loss.next_token_nll: its flattened cross-entropy is closer to a float64 reference, but on
        # SmolLM2 (V = 49,152) it moves this perplexity by 1.1e-4 relative, and a refactor keeps numbers.
        nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # (B, T-1)
        valid = torch.ones_like(nll, dtype=torch.bool) if mask is None else mask[:, 1:].bool() & mask[:, :-1].bool()
        sums.append(nll.masked_fill(~valid, 0.0).sum(dim=1).double().cpu())  # (B,)
        counts.append(valid.sum(dim=1).cpu())  # (B,)
    return torch.cat(sums), torch.cat(counts)


def token_nll(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    batch_size: int = 4,
    progress: bool = False,
) -> tuple[float, int]:
    """Sum of next-token negative log-likelihoods (nats) over the blocks, and the number of predictions."""
    sums, counts = block_nll(model, input_ids, attention_mask, batch_size, progress)
    return float(sums.sum()), int(counts.sum())


def mean_nll(model: nn.Module, input_ids: torch.Tensor, **kwargs) -> float:
    """Mean next-token negative log-likelihood in nats (the log of the perplexity)."""
    total, count = token_nll(model, input_ids, **kwargs)
    return total / count


def perplexity(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    batch_size: int = 4,
    progress: bool = False,
) -> float:
    """Token-weighted perplexity of ``model`` on ``(N, T)`` blocks, following the module's protocol."""
    return math.exp(mean_nll(model, input_ids, attention_mask=attention_mask, batch_size=batch_size, progress=progress))
