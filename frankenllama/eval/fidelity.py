"""Fidelity of a compressed model to its original: next-token distributions and generations.

Accuracy and perplexity say how good a model is; fidelity says how much it still *behaves like the
model it was cut from*. Following the distillation/compression literature (e.g. Dutta et al. 2024,
"Accuracy is Not All You Need", arXiv:2407.09141, who show that matched accuracy can hide many
flipped answers), we report:

* **KL divergence** ``KL(p_ref || p_model)`` of the next-token distributions, averaged over every
  position of the evaluation token blocks (nats per token; 0 for an identical model);
* **top-1 agreement**: the fraction of positions where both models' most likely next token is the
  same (1 for an identical model);
* **greedy generations** of both models for a fixed prompt set, side by side, with the
  **repeated n-gram fraction** ``1 - #distinct n-grams / #n-grams`` of each continuation — depth
  pruning tends to make generations loop (Gromov et al. 2024, arXiv:2403.17887), which accuracy on
  multiple-choice tasks does not show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from frankenllama.models import model_device
from frankenllama.eval.zero_shot import apply_chat

DEFAULT_PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "Explain photosynthesis in one paragraph.",
    "Write a short poem about the sea.",
    "List three uses of a paperclip.",
    "Why is the sky blue?",
    "Give me a recipe for pancakes.",
    "What is the difference between weather and climate?",
    "Summarize the plot of Romeo and Juliet.",
)


@dataclass(frozen=True)
class FidelityResult:
    """Mean ``KL(p_ref || p_model)`` in nats per token, top-1 agreement, and the positions compared."""

    kl: float
    top1_agreement: float
    n_tokens: int


@torch.inference_mode()
def next_token_fidelity(
    reference: nn.Module,
    model: nn.Module,
    input_ids: torch.Tensor,
    batch_size: int = 4,
    progress: bool = False,
) -> FidelityResult:
    """KL divergence and top-1 agreement of ``model`` to ``reference`` on ``(N, T)`` token blocks.

    Every position of every block is compared (``N * T`` next-token distributions), in float32.
    """
    if input_ids.dim() != 2 or input_ids.numel() == 0:
        raise ValueError(f"expected token blocks of shape (N >= 1, T >= 1), got {tuple(input_ids.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    kl_sum, agree, count = 0.0, 0, 0
    for start in tqdm(range(0, len(input_ids), batch_size), desc="fidelity", disable=not progress, leave=False):
        ids = input_ids[start : start + batch_size]  # (B, T)
        ref_logp = torch.log_softmax(reference(ids.to(model_device(reference))).logits.float(), -1)  # (B, T, V)
        out_logp = torch.log_softmax(model(ids.to(model_device(model))).logits.float(), -1).to(ref_logp.device)
        kl = (ref_logp.exp() * (ref_logp - out_logp)).sum(-1)  # (B, T)
        kl_sum += float(kl.double().sum())
        agree += int((ref_logp.argmax(-1) == out_logp.argmax(-1)).sum())
        count += kl.numel()
    return FidelityResult(kl_sum / count, agree / count, count)


def repeated_ngram_fraction(tokens: Sequence, n: int = 3) -> float:
    """``1 - distinct/total`` over the n-grams of ``tokens`` (0: no repetition; → 1: a loop).

    Returns 0.0 for a sequence shorter than ``n``.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


@torch.inference_mode()
def greedy_generate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int = 64,
    chat_template: bool = True,
) -> list[list[int]]:
    """Greedy continuations (token ids, without the prompt; stopped at EOS) of each prompt, one by one."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    device = model_device(model)
    outputs = []
    for prompt in prompts:
        text = apply_chat(tokenizer, prompt) if chat_template else prompt
        ids = tokenizer(text, add_special_tokens=not chat_template, return_tensors="pt").input_ids.to(device)
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
        new = out[0, ids.shape[1] :].tolist()
        if tokenizer.eos_token_id in new:
            new = new[: new.index(tokenizer.eos_token_id)]
        outputs.append(new)
    return outputs


def generations_side_by_side(
    models: Mapping[str, nn.Module],
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    max_new_tokens: int = 64,
    chat_template: bool = True,
    n: int = 3,
) -> pd.DataFrame:
    """Greedy generations of several models (keyed by display name) for the same prompts.

    One row per (prompt, model): the decoded text, its length in tokens, and its repeated n-gram
    fraction. ``models`` must share ``tokenizer``.
    """
    rows = []
    for name, model in models.items():
        for prompt, ids in zip(prompts, greedy_generate(model, tokenizer, prompts, max_new_tokens, chat_template)):
            rows.append(
                {
                    "prompt": prompt,
                    "model": name,
                    "text": tokenizer.decode(ids, skip_special_tokens=True).strip(),
                    "tokens": len(ids),
                    f"repeated_{n}gram": repeated_ngram_fraction(ids, n),
                }
            )
    return pd.DataFrame(rows)
