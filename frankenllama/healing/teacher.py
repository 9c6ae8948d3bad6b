"""The teacher's next-token distributions, computed once and reused by every distillation run.

The unpruned teacher's output on a training block does not depend on the student or on the step,
so running the teacher inside every optimizer step repeats the same work for each recipe, each
rerun and each resumed run. ``teacher_targets`` runs the teacher once over the blocks a run will
see and keeps, per position, the ``top_k`` most likely tokens and their log-probabilities at the
distillation temperature; ``cached_teacher_targets`` stores them under ``data/cache/teacher/``
keyed by the teacher's weights, the blocks, the temperature and ``k``, so ``kd-lora`` and
``kd-full`` of one notebook (and any later run) share one teacher pass.

The distillation loss then compares distributions over ``k + 1`` outcomes — the teacher's top-k
tokens and "any other token" — ``KL(p_t ‖ p_s)`` with both tails lumped into the last outcome
(``sparse_kl``). By the data-processing inequality this never exceeds the full-vocabulary KL, and
it equals it when the teacher puts no mass outside its top k. Measured on SmolLM2-135M (4 training
blocks): at T = 1 the mean tail mass is 0.14 / 0.07 / 0.035 outside the top 16 / 64 / 256 tokens;
at T = 2 it is 0.66 outside the top 64 and still 0.41 outside the top 1,024, which is why the
workbook distils at T = 1 (every run reports its tail mass). Caching sparse teacher logits is
what large-scale distillation pipelines do (e.g. Gemma 2, arXiv:2408.00118; see Anshumann et al.
2025, arXiv:2503.16870, on the bias of top-k targets, which the tail bucket reduces).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from frankenllama.cache import cached_arrays
from frankenllama.models import model_device


@dataclass(frozen=True)
class TeacherTargets:
    """Top-k teacher targets of ``N`` blocks: ``indices`` (N, T−1, k) int64 token ids and ``logp``
    (N, T−1, k) float32 log-probabilities at ``temperature`` (full-vocabulary softmax), best first."""

    indices: torch.Tensor
    logp: torch.Tensor
    temperature: float

    @property
    def top_k(self) -> int:
        return int(self.indices.shape[-1])

    def rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.indices[rows], self.logp[rows]

    def tail_mass(self) -> float:
        """Mean teacher probability outside its top k (0 means the sparse KL is the full KL)."""
        return float((1 - self.logp.exp().sum(-1)).clamp_min(0).mean())


@torch.no_grad()
def teacher_targets(
    teacher: PreTrainedModel, blocks: torch.Tensor, temperature: float, top_k: int, batch_size: int = 4, progress: bool = False
) -> TeacherTargets:
    """Run ``teacher`` once over ``(N, T)`` blocks; keep each position's top-k log-probabilities at ``temperature``."""
    if top_k < 1 or temperature <= 0:
        raise ValueError(f"need top_k >= 1 and temperature > 0, got {top_k}, {temperature}")
    device = model_device(teacher)
    was_training = teacher.training
    teacher.eval()
    indices, logps = [], []
    for start in tqdm(range(0, len(blocks), batch_size), desc="teacher targets", disable=not progress, leave=False):
        ids = blocks[start : start + batch_size].to(device)
        logits = teacher(input_ids=ids, use_cache=False).logits[:, :-1].float()  # (B, T-1, V)
        logp = F.log_softmax(logits / temperature, dim=-1)
        top = logp.topk(top_k, dim=-1)
        indices.append(top.indices.cpu())
        logps.append(top.values.cpu())
        del logits, logp
    teacher.train(was_training)
    return TeacherTargets(torch.cat(indices), torch.cat(logps), float(temperature))


def cached_teacher_targets(
    teacher: PreTrainedModel,
    blocks: torch.Tensor,
    temperature: float,
    top_k: int,
    teacher_digest: str,
    blocks_digest: str,
    batch_size: int = 4,
    progress: bool = False,
    root: Path | None = None,
) -> tuple[TeacherTargets, bool]:
    """``teacher_targets`` read from or written to the disk cache; returns ``(targets, computed_now)``.

    The key holds the digests of the teacher's weights and of the blocks (``frankenllama.healing.
    fingerprint.model_digest`` / ``tensor_digest``), the temperature and k. ``root``: the cache
    folder (default ``frankenllama.paths.CACHE_DIR``, looked up when called).
    """
    key = {"teacher": teacher_digest, "blocks": blocks_digest, "shape": list(blocks.shape),
           "temperature": float(temperature), "top_k": int(top_k)}  # fmt: skip
    computed = []

    def compute() -> dict[str, np.ndarray]:
        computed.append(True)
        t = teacher_targets(teacher, blocks, temperature, top_k, batch_size, progress)
        return {"indices": t.indices.numpy(), "logp": t.logp.numpy()}

    arrays = cached_arrays("teacher", key, compute, root=root)  # None: paths.CACHE_DIR, read when called
    return TeacherTargets(torch.from_numpy(arrays["indices"]), torch.from_numpy(arrays["logp"]), float(temperature)), bool(computed)


def sparse_kl(student_logp: torch.Tensor, indices: torch.Tensor, teacher_logp: torch.Tensor,
              s_top: torch.Tensor | None = None) -> torch.Tensor:
    """Mean per-position ``KL(p_t ‖ p_s)`` over the teacher's top-k tokens plus one "other" outcome.

    ``student_logp`` (B, T, V): the student's log-softmax at the targets' temperature (at T = 1 the
    same tensor serves the cross-entropy); ``indices``/``teacher_logp`` (B, T, k) from ``TeacherTargets``.
    ``s_top``: ``student_logp.gather(-1, indices)`` when the caller has it already.
    """
    if s_top is None:
        s_top = student_logp.gather(-1, indices)  # (B, T, k)
    p_t = teacher_logp.exp()
    head = (p_t * (teacher_logp - s_top)).sum(-1)
    tail_t = (1 - p_t.sum(-1)).clamp_min(0)
    # log(1 − Σ p_s over the top k), computed stably from log Σ p_s = logsumexp(s_top)
    log_tail_s = torch.log(-torch.expm1(torch.logsumexp(s_top, dim=-1).clamp_max(-1e-7)))
    log_tail_t = torch.log(tail_t.clamp_min(torch.finfo(torch.float32).tiny))
    tail = torch.where(tail_t > 0, tail_t * (log_tail_t - log_tail_s), torch.zeros_like(tail_t))
    return (head + tail).mean()


def full_kl(student_logp: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean per-position full-vocabulary ``KL(p_t^T ‖ p_s^T)`` (the online teacher's loss).

    ``student_logp``: the student's log-softmax at ``temperature``, as for ``sparse_kl``.
    """
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(student_logp, log_p_t, log_target=True, reduction="none").sum(-1).mean()
