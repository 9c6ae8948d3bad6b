"""The training loop of a trained recipe: seeded batch order, teacher targets, steps, evals, checkpoints.

Data order. Batch ``s`` holds the blocks ``batch_indices(s, …)`` picks: a fresh seeded permutation
of the training blocks per epoch, a pure function of (seed, step). A resumed run therefore sees
exactly the batches the uninterrupted run would have seen, and — with the trainable weights,
optimizer, scheduler and RNG states restored from the checkpoint — ends bit-identical to it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from frankenllama.cache import seed_everything
from frankenllama.healing.checkpoint import rng_state, save_checkpoint, set_rng_state
from frankenllama.healing.fingerprint import tensor_digest
from frankenllama.healing.recipes import HealConfig
from frankenllama.healing.teacher import TeacherTargets, cached_teacher_targets
from frankenllama.healing.trainer import RecipeTrainer
from frankenllama.healing.validate import RunPlan
from frankenllama.models import model_device
from frankenllama.eval.perplexity import block_nll


def batch_indices(step: int, batch_size: int, n_blocks: int, seed: int) -> torch.Tensor:
    """Block ids of batch ``step``: a fresh seeded permutation per epoch, a pure function of its arguments."""
    flat = torch.arange(step * batch_size, (step + 1) * batch_size)
    out = torch.empty(batch_size, dtype=torch.long)
    for epoch in flat.div(n_blocks, rounding_mode="floor").unique().tolist():
        perm = torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        sel = flat // n_blocks == epoch
        out[sel] = perm[flat[sel] % n_blocks]
    return out


def eval_nll(model: torch.nn.Module, blocks: torch.Tensor | None, batch_size: int) -> list[float] | None:
    """Mean NLL (nats) of each of the ``(N, T)`` eval ``blocks`` in eval mode (``None`` without blocks); keeps the mode."""
    if blocks is None:
        return None
    was_training = model.training
    model.eval()
    sums, counts = block_nll(model, blocks, batch_size=batch_size)
    model.train(was_training)
    return (sums / counts).tolist()


def nll_ppl(nll: list[float] | None) -> float | None:
    """The perplexity of blocks of equal length from their mean NLLs: ``exp`` of their mean."""
    return None if nll is None else math.exp(sum(nll) / len(nll))


@dataclass(frozen=True)
class HeldOut:
    """The held-out blocks a run is evaluated on: in-domain ``blocks`` and, optionally, out-of-domain ``ood``.

    Out-of-domain text (e.g. the eval-only ``olmo-passages`` corpus) is never trained or calibrated
    on; its perplexity shows whether healing on the training corpus generalises beyond it.
    """

    blocks: torch.Tensor | None
    ood: torch.Tensor | None = None
    batch_size: int = 4

    def nll(self, model: torch.nn.Module) -> dict[str, list[float] | None]:
        """Per-block mean NLLs of ``model``: ``{"in": …, "out": …}`` (``None`` where no blocks)."""
        return {"in": eval_nll(model, self.blocks, self.batch_size), "out": eval_nll(model, self.ood, self.batch_size)}

    def point(self, model: torch.nn.Module, step: int, tokens: int, nll: dict | None = None) -> dict[str, float]:
        """A curve point: perplexity in domain (``ppl``) and out of domain (``ppl_ood``, when measured)."""
        nll = self.nll(model) if nll is None else nll
        row = {"step": step, "tokens": tokens, "ppl": nll_ppl(nll["in"])}
        if nll["out"] is not None:
            row["ppl_ood"] = nll_ppl(nll["out"])
        return row


@dataclass
class TrainLog:
    """What the loop accumulates; a checkpoint carries it over a resume."""

    curve: list[dict[str, float]] = field(default_factory=list)  # {"step", "tokens", "ppl"}
    losses: list[dict[str, float]] = field(default_factory=list)  # one row per logged step
    train_time_s: float = 0.0  # seconds in optimizer steps (cumulative over resumes)
    resumed_from_step: int | None = None
    teacher_time_s: float = 0.0
    teacher_tail_mass: float | None = None


@dataclass(frozen=True)
class RunTargets:
    """The cached teacher targets of the blocks a run will see, and each block's row in them."""

    targets: TeacherTargets
    position: torch.Tensor  # (N,) row of each training block in ``targets`` (−1: never used)

    def rows(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.targets.rows(self.position[batch])


def run_targets(
    teacher: PreTrainedModel, train_blocks: torch.Tensor, config: HealConfig, plan: RunPlan, teacher_digest: str | None,
    batch_size: int, progress: bool,
) -> tuple[RunTargets, float]:  # fmt: skip
    """One (cached) teacher pass over the blocks the run's batches use; returns them and its seconds (0 if cached)."""
    started = time.perf_counter()
    used = torch.cat([batch_indices(s, config.batch_size, len(train_blocks), config.seed) for s in range(plan.n_steps)])
    rows = used.unique()  # sorted block ids
    targets, computed = cached_teacher_targets(
        teacher, train_blocks[rows], config.kd_temperature, config.kd_top_k, teacher_digest,
        tensor_digest(train_blocks[rows]), batch_size=batch_size, progress=progress)  # fmt: skip
    position = torch.full((len(train_blocks),), -1, dtype=torch.long)
    position[rows] = torch.arange(len(rows))
    return RunTargets(targets, position), (time.perf_counter() - started if computed else 0.0)


def _start(trainer: RecipeTrainer, checkpoint: dict[str, Any] | None, nll_before: dict, patched: bool,
           held_out: HeldOut) -> TrainLog:  # fmt: skip
    """The log to continue: restored from ``checkpoint`` (with the trainer and RNG states), or a new one."""
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint["trainer"])
        set_rng_state(checkpoint["rng"])
        return TrainLog(checkpoint["curve"], checkpoint["losses"], checkpoint["train_time_s"], checkpoint["step"])
    log = TrainLog()
    if held_out.blocks is not None:
        log.curve.append(held_out.point(trainer.model, 0, 0, None if patched else nll_before))
    return log


def train(
    work: PreTrainedModel,
    config: HealConfig,
    plan: RunPlan,
    *,
    train_blocks: torch.Tensor,
    teacher: PreTrainedModel | None,
    teacher_digest: str | None,
    held_out: HeldOut,
    nll_before: dict[str, list[float] | None],
    checkpoint: dict[str, Any] | None,
    save: Callable[[int, dict[str, Any]], None] | None,
    progress: bool,
    on_step: Callable[[int, RecipeTrainer], None] | None,
) -> tuple[PreTrainedModel, TrainLog]:
    """Train ``work`` (modified in place) for ``plan.n_steps`` steps, from ``checkpoint`` if given.

    ``save(step, state)`` is called every ``config.checkpoint_every`` steps (but not after the last).
    Returns the healed plain model (LoRA merged) and the log.
    """
    targets, teacher_time, tail_mass = None, 0.0, None
    if plan.trained.distill and config.kd_top_k:  # the teacher once over the blocks this run will see
        targets, teacher_time = run_targets(teacher, train_blocks, config, plan, teacher_digest, held_out.batch_size,
                                            progress)  # fmt: skip
        tail_mass = targets.targets.tail_mass()
    seed_everything(config.seed)  # adapter initialisation is seeded the same on a resume
    device = model_device(work)
    trainer = RecipeTrainer(work, config, plan.n_steps, teacher)
    log = _start(trainer, checkpoint, nll_before, config.patches, held_out)
    log.teacher_time_s, log.teacher_tail_mass = teacher_time, tail_mass
    start, n_steps, tps = log.resumed_from_step or 0, plan.n_steps, plan.tokens_per_step
    bar = tqdm(total=n_steps, initial=start, desc=f"heal {config.recipe}", disable=not progress, unit="step")
    for step in range(start, n_steps):
        batch = batch_indices(step, config.batch_size, len(train_blocks), config.seed)
        ids = train_blocks[batch].to(device)  # (B, T)
        parts = trainer.step(ids, targets.rows(batch) if targets is not None else None)
        log.train_time_s += parts["seconds"]
        done = step + 1
        if done % config.log_every == 0 or done == n_steps:
            log.losses.append({"step": done, "tokens": done * tps, **parts})
        bar.update(1)
        bar.set_postfix(loss=f"{parts['loss']:.3f}", tok_s=f"{tps / parts['seconds']:.0f}")
        if config.eval_every and done % config.eval_every == 0 and done < n_steps and held_out.blocks is not None:
            log.curve.append(held_out.point(trainer.model, done, done * tps))
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done < n_steps and save is not None:
            save(done, {"trainer": trainer.state_dict(), "rng": rng_state(), "curve": log.curve, "losses": log.losses,
                        "ppl_before": nll_ppl(nll_before["in"]), "train_time_s": log.train_time_s})  # fmt: skip
        if on_step is not None:
            on_step(done, trainer)
    bar.close()
    return trainer.finish(), log
