"""Run any lm-evaluation-harness task on a frankenllama model (optional; ``pip install lm-eval``).

lm-evaluation-harness (Gao et al. 2021, EleutherAI) is not a dependency of frankenllama: its tasks
fetch their datasets from the Hugging Face Hub, which this workbook never does. Where it is
installed and its datasets are cached locally, this bridge hands an in-memory model — pruned,
healed, or the original — to ``lm_eval.simple_evaluate`` through its ``HFLM`` wrapper, so the
harness's own prompts and metrics apply unchanged. Our offline evaluator is
``frankenllama.tasks.evaluate_tasks``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase


class LmEvalMissingError(ImportError):
    """lm-evaluation-harness is not installed."""


def run_lm_eval(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[str],
    limit: int | None = None,
    batch_size: int = 8,
    num_fewshot: int | None = None,
    apply_chat_template: bool = False,
) -> dict[str, Any]:
    """``lm_eval.simple_evaluate`` on ``model``; returns the harness's ``results`` dict per task."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError as exc:
        raise LmEvalMissingError(
            "the lm-eval bridge needs lm-evaluation-harness: pip install lm-eval (its tasks read their "
            "datasets from the Hugging Face Hub or its local cache); frankenllama.tasks.evaluate_tasks "
            "evaluates offline without it"
        ) from exc
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be a positive number of items or None, got {limit}")
    wrapped = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = lm_eval.simple_evaluate(
        model=wrapped, tasks=list(tasks), limit=limit, num_fewshot=num_fewshot, apply_chat_template=apply_chat_template
    )
    return out["results"]
