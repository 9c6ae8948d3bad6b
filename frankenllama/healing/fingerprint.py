"""The fingerprint of a healing run: a hash of everything that determines its result.

A run's result is a function of its config (minus the checkpoint cadence), the student's and the
teacher's weights and the token blocks it reads. ``run_fingerprint`` hashes exactly these, so a
checkpoint or a saved model is reused only by a run that would recompute the same weights, and a
checkpoint folder of another run is refused (``frankenllama.healing.checkpoint``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from transformers import PreTrainedModel

from frankenllama.cache import to_jsonable
from frankenllama.healing.recipes import HealConfig


def tensor_digest(t: torch.Tensor | None) -> str | None:
    """A short SHA-256 of a tensor's bytes (``None`` for ``None``)."""
    if t is None:
        return None
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


@torch.no_grad()
def model_digest(model: PreTrainedModel | None) -> str | None:
    """A hash of a model's architecture, lineage and weights (float64 checksums of every tensor)."""
    if model is None:
        return None
    c = model.config
    arch = {k: getattr(c, k, None) for k in ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers")}
    arch["frankenllama"] = getattr(c, "frankenllama", None)
    sums = [f"{n}:{float(p.sum(dtype=torch.float64)):.10e}:{float(p.abs().sum(dtype=torch.float64)):.10e}" for n, p in model.state_dict().items()]
    blob = json.dumps({"arch": to_jsonable(arch), "sums": sums}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def input_digests(
    config: HealConfig,
    student: PreTrainedModel,
    teacher: PreTrainedModel | None,
    train_blocks: torch.Tensor | None,
    calib_blocks: torch.Tensor | None,
    eval_blocks: torch.Tensor | None,
    ood_blocks: torch.Tensor | None = None,
) -> dict[str, str | None]:
    """Digests of the inputs a run with ``config`` reads (``None`` for those it does not read).

    ``calib_blocks`` are the blocks the patch is fitted on, already cut to ``config.patch_tokens``.
    Out-of-domain eval blocks (``ood_blocks``) enter only when given, so a run without them keeps
    the fingerprint it had before they existed.
    """
    trains = config.trained_recipe is not None
    ood = {} if ood_blocks is None or eval_blocks is None else {"ood": tensor_digest(ood_blocks)}
    return {**ood,
        "student": model_digest(student),
        "teacher": model_digest(teacher) if config.distills else None,
        "train": tensor_digest(train_blocks) if trains else None,
        "calib": tensor_digest(calib_blocks) if config.patches else None,
        "eval": tensor_digest(eval_blocks),
    }


def run_fingerprint(config: HealConfig, digests: dict[str, Any]) -> str:
    """The run's fingerprint: a short hash of ``config.fingerprint_dict()`` and the input ``digests``."""
    blob = json.dumps({"config": to_jsonable(config.fingerprint_dict()), **digests}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
