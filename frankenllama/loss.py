"""Next-token negative log-likelihood, the one loss every measurement of the workbook shares.

Perplexity, the ablation scores, Taylor importance, the searches and the healing recipes all ask
the same question of a model's logits: how surprised is it by the next token? They all call
``next_token_nll`` so that the shift, the float32 upcast and the reduction are written once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def next_token_nll(logits: torch.Tensor, input_ids: torch.Tensor, shifted: bool = False) -> torch.Tensor:
    """Per-position next-token NLL in nats, float32: ``(..., T-1)``.

    ``logits``: ``(..., T, V)`` logits of every position (the last one's prediction is dropped), or,
    with ``shifted=True``, ``(..., T-1, V)`` logits that already predict ``input_ids[..., 1:]``.
    ``input_ids``: ``(..., T)`` the token blocks whose tokens ``1 … T-1`` are the targets.
    """
    if not shifted:
        logits = logits[..., :-1, :]
    targets = input_ids[..., 1:].to(logits.device)
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not predict targets {tuple(targets.shape)}")
    flat = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return flat.view(targets.shape)
