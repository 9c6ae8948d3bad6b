"""``heal``: run a recipe on a pruned model at a token budget, resumably, and save the result.

One call does, in order: validate everything (recipe, teacher, LoRA targets, checkpoint); apply the
training-free patch if the recipe starts with one; train for ``tokens // (batch_size · T)`` steps
with a progress bar, a loss log, eval-perplexity points and periodic checkpoints; merge; save.

Resuming. Every ``checkpoint_every`` steps the trainable weights, optimizer, scheduler, RNG states,
step counter, logs and elapsed time are written atomically to the checkpoint folder together with a
fingerprint of everything that determines the result (config minus the checkpoint cadence, the
student's and teacher's weights, the data). A later call with the same inputs resumes from it and
ends bit-identical to an uninterrupted run (the data order is a pure function of seed and step); a
call with different inputs refuses the folder instead of silently mixing runs.

Saving. The healed model is written as a plain transformers folder (loadable by
``AutoModelForCausalLM.from_pretrained``, and a ``frankenllama.variants`` variant when ``out_dir`` is
a variant path) with ``frankenllama.json`` (config, seed, recipe, package versions, tokens seen,
wall time, tokens/s, perplexities), ``losses.csv`` and ``eval.csv``. The folder appears atomically:
a run that fails or is killed leaves no partial output. A folder whose fingerprint matches is reused
as a cache hit instead of retraining.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from frankenllama.cache import atomic_dir, provenance, seed_everything, to_jsonable
from frankenllama.healing.teacher import cached_teacher_targets
from frankenllama.healing.patch import PatchFit, check_teacher_lineage, linear_patch, patch_runs
from frankenllama.healing.recipes import HealConfig
from frankenllama.healing.trainer import RecipeTrainer, check_lora_targets, check_teacher, partial_layers
from frankenllama.models import model_device
from frankenllama.perplexity import perplexity
from frankenllama.surgery import removed_layers
from frankenllama.variants import META_FILE

CHECKPOINT_FILE = "checkpoint.pt"


class CheckpointMismatchError(ValueError):
    """A checkpoint folder holds a run with a different configuration, model or data."""


@dataclass
class HealResult:
    """What a healing run produced and what it cost."""

    model: PreTrainedModel | None  # the healed plain transformers model (eval mode); None once released
    config: HealConfig
    out_dir: Path | None
    tokens_seen: int  # training tokens (0 for a training-free recipe)
    calib_tokens: int  # calibration tokens used by the patch
    steps: int
    train_time_s: float  # seconds in patching + optimizer steps (no eval, no saving)
    wall_time_s: float  # seconds for the whole call (this session; cumulative over resumes)
    tokens_per_s: float  # training tokens / seconds in optimizer steps
    ppl_before: float | None  # eval perplexity of the student as given
    ppl_after: float | None
    curve: list[dict[str, float]] = field(default_factory=list)  # {"step", "tokens", "ppl"}
    losses: list[dict[str, float]] = field(default_factory=list)  # one row per logged step
    patch_fits: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_step: int | None = None
    cached: bool = False
    fingerprint: str = ""
    teacher_time_s: float = 0.0  # the one teacher pass over the run's blocks (0 when its targets were cached)
    teacher_tail_mass: float | None = None  # mean teacher probability outside the cached top k

    def summary(self) -> dict[str, Any]:
        """A flat row for tables: recipe, tokens, times, perplexities."""
        return {
            "recipe": self.config.recipe,
            "tokens": self.tokens_seen,
            "calib_tokens": self.calib_tokens,
            "steps": self.steps,
            "train_time_s": round(self.train_time_s, 1),
            "wall_time_s": round(self.wall_time_s, 1),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "teacher_time_s": round(self.teacher_time_s, 1),
            "ppl_before": self.ppl_before,
            "ppl_after": self.ppl_after,
        }


# --------------------------------------------------------------------------- fingerprints
def tensor_digest(t: torch.Tensor | None) -> str | None:
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


def _fingerprint(config: HealConfig, parts: dict[str, Any]) -> str:
    blob = json.dumps({"config": to_jsonable(config.fingerprint_dict()), **parts}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- data order
def batch_indices(step: int, batch_size: int, n_blocks: int, seed: int) -> torch.Tensor:
    """Block ids of batch ``step``: a fresh seeded permutation per epoch, a pure function of its arguments."""
    flat = torch.arange(step * batch_size, (step + 1) * batch_size)
    out = torch.empty(batch_size, dtype=torch.long)
    for epoch in flat.div(n_blocks, rounding_mode="floor").unique().tolist():
        perm = torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        sel = flat // n_blocks == epoch
        out[sel] = perm[flat[sel] % n_blocks]
    return out


# --------------------------------------------------------------------------- io helpers
def _rows_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_checkpoint(folder: Path, payload: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{CHECKPOINT_FILE}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, folder / CHECKPOINT_FILE)
    (folder / "losses.csv").write_text(_rows_csv(payload["losses"]))


def _load_checkpoint(folder: Path, fingerprint: str) -> dict[str, Any] | None:
    path = folder / CHECKPOINT_FILE
    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("fingerprint") != fingerprint:
        raise CheckpointMismatchError(
            f"checkpoint folder {folder} holds a run with a different configuration, model or data "
            f"(fingerprint {payload.get('fingerprint')} ≠ {fingerprint}); refusing to resume from it. "
            "Delete the folder or pass another checkpoint_dir"
        )
    return payload


def _load_cached(out_dir: Path, fingerprint: str, config: HealConfig) -> HealResult | None:
    meta_file = out_dir / META_FILE
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text()).get("meta", {})
    if meta.get("fingerprint") != fingerprint:
        return None
    model = AutoModelForCausalLM.from_pretrained(out_dir, local_files_only=True)
    model.eval()
    losses = list(csv.DictReader(io.StringIO((out_dir / "losses.csv").read_text()))) if (out_dir / "losses.csv").exists() else []
    losses = [{k: float(v) for k, v in row.items() if v != ""} for row in losses]
    h = meta["healing"]
    return HealResult(
        model=model, config=config, out_dir=out_dir, tokens_seen=h["tokens_seen"], calib_tokens=h["calib_tokens"],
        steps=h["steps"], train_time_s=h["train_time_s"], wall_time_s=h["wall_time_s"],
        tokens_per_s=h["tokens_per_s"], ppl_before=h["ppl_before"], ppl_after=h["ppl_after"], curve=h["curve"],
        losses=losses, patch_fits=h["patch_fits"], cached=True, fingerprint=fingerprint,
        teacher_time_s=h.get("teacher_time_s", 0.0), teacher_tail_mass=h.get("teacher_tail_mass"),
    )  # fmt: skip


def default_checkpoint_dir(out_dir: Path) -> Path:
    """``<parent>/.<name>.checkpoints``: hidden beside the output, so list_variants skips it."""
    return out_dir.parent / f".{out_dir.name}.checkpoints"


# --------------------------------------------------------------------------- heal
def heal(
    student: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: HealConfig,
    *,
    train_blocks: torch.Tensor | None = None,
    teacher: PreTrainedModel | None = None,
    teacher_tokenizer: PreTrainedTokenizerBase | None = None,
    calib_blocks: torch.Tensor | None = None,
    eval_blocks: torch.Tensor | None = None,
    out_dir: Path | None = None,
    checkpoint_dir: Path | None = None,
    meta: dict[str, Any] | None = None,
    eval_batch_size: int = 4,
    progress: bool = True,
    on_step: Callable[[int, RecipeTrainer], None] | None = None,
) -> HealResult:
    """Heal ``student`` with ``config.recipe`` and return the healed model with its costs and curves.

    Args:
        student: the pruned model; not modified (the run works on a copy).
        tokenizer: the student's tokenizer, saved beside the healed weights.
        config: the frozen run config (recipe, token budget, optimizer, recipe options).
        train_blocks: ``(N, T)`` training token blocks (e.g. the ``train`` split of ``wiki-leads``);
            required by trained recipes.
        teacher: the unpruned model; required by distillation and by the linear patch.
        teacher_tokenizer: if given, checked to map tokens to the same ids as ``tokenizer``.
        calib_blocks: ``(N, T)`` calibration blocks for the patch (default: the first training blocks).
        eval_blocks: ``(N, T)`` held-out blocks; perplexity before, every ``eval_every`` steps, after.
        out_dir: where to save the healed model (atomically); ``None`` saves nothing.
        checkpoint_dir: where checkpoints go (default: hidden beside ``out_dir``).
        meta: extra metadata for ``frankenllama.json`` (e.g. how the student was pruned).
        on_step: called as ``on_step(step, trainer)`` after every optimizer step (tests use it to
            inspect the adapter model or to simulate a killed run by raising).
    """
    t_call = time.perf_counter()
    trained = config.trained_recipe
    # ---- validate every input before any work or write
    if trained is not None and (train_blocks is None or train_blocks.dim() != 2 or len(train_blocks) == 0):
        raise ValueError(f"recipe {config.recipe!r} trains: pass train_blocks as an (N, T) tensor of token blocks")
    if config.distills and teacher is None:
        raise ValueError(f"recipe {config.recipe!r} needs the unpruned model as teacher=")
    if teacher is not None:
        check_teacher(student, teacher, tokenizer, teacher_tokenizer)
    if config.patches:
        check_teacher_lineage(student, teacher)
        patch_runs(student, config.patch_layers)
        if calib_blocks is None:
            if train_blocks is None:
                raise ValueError("the linear patch needs calib_blocks (or train_blocks to take them from)")
            calib_blocks = train_blocks
    if trained is not None and trained.adapter == "lora":
        check_lora_targets(student, config.lora_targets)
    if trained is not None and trained.adapter == "partial":
        partial_layers(student, config.partial_scope, config.partial_width)
    block_len = int(train_blocks.shape[1]) if trained is not None else 0
    tokens_per_step = config.batch_size * block_len
    n_steps = config.tokens // tokens_per_step if trained is not None else 0
    if trained is not None and n_steps < 1:
        raise ValueError(
            f"a budget of {config.tokens} tokens is less than one step of {config.batch_size} × {block_len} tokens; "
            "raise tokens or lower batch_size"
        )
    if calib_blocks is not None:
        calib_n = max(1, min(len(calib_blocks), -(-config.patch_tokens // calib_blocks.shape[1])))
        calib_blocks = calib_blocks[:calib_n]

    teacher_digest = model_digest(teacher) if config.distills else None
    fingerprint = _fingerprint(
        config,
        {
            "student": model_digest(student),
            "teacher": teacher_digest,
            "train": tensor_digest(train_blocks) if trained is not None else None,
            "calib": tensor_digest(calib_blocks) if config.patches else None,
            "eval": tensor_digest(eval_blocks),
        },
    )
    out_dir = Path(out_dir) if out_dir is not None else None
    if out_dir is not None:
        cached = _load_cached(out_dir, fingerprint, config)
        if cached is not None:
            return cached
    if checkpoint_dir is None and out_dir is not None:
        checkpoint_dir = default_checkpoint_dir(out_dir)
    checkpoint = None
    if checkpoint_dir is not None and trained is not None:
        checkpoint = _load_checkpoint(Path(checkpoint_dir), fingerprint)

    def evaluate(model) -> float | None:
        if eval_blocks is None:
            return None
        was_training = model.training
        model.eval()
        ppl = perplexity(model, eval_blocks, batch_size=eval_batch_size)
        model.train(was_training)
        return ppl

    seed_everything(config.seed)
    device = model_device(student)
    work = copy.deepcopy(student)
    curve: list[dict[str, float]] = []
    losses: list[dict[str, float]] = []
    prior_wall = prior_train = 0.0
    ppl_before = evaluate(work) if checkpoint is None else checkpoint["ppl_before"]

    # ---- training-free patch (deterministic; redone on resume, before the trained state is loaded)
    t_patch = time.perf_counter()
    fits: list[PatchFit] = []
    if config.patches:
        fits = linear_patch(work, teacher, calib_blocks, config.patch_layers, config.patch_ridge)
    patch_time = time.perf_counter() - t_patch
    calib_tokens = sum(f.tokens for f in fits)

    start_step, resumed = 0, None
    teacher_time, tail_mass = 0.0, None
    if trained is None:
        model, train_time = work, patch_time
    else:
        targets = None
        if trained.distill and config.kd_top_k:  # the teacher once over the blocks this run will see
            t_teacher = time.perf_counter()
            used = torch.cat([batch_indices(s, config.batch_size, len(train_blocks), config.seed) for s in range(n_steps)])
            rows = used.unique()  # sorted block ids
            targets, computed = cached_teacher_targets(
                teacher, train_blocks[rows], config.kd_temperature, config.kd_top_k, teacher_digest,
                tensor_digest(train_blocks[rows]), batch_size=eval_batch_size, progress=progress)
            position = torch.full((len(train_blocks),), -1, dtype=torch.long)
            position[rows] = torch.arange(len(rows))
            teacher_time = time.perf_counter() - t_teacher if computed else 0.0
            tail_mass = targets.tail_mass()
        seed_everything(config.seed)  # adapter initialisation is seeded the same on a resume
        trainer = RecipeTrainer(work, config, n_steps, teacher)
        if checkpoint is not None:
            trainer.load_state_dict(checkpoint["trainer"])
            _set_rng_state(checkpoint["rng"])
            start_step = resumed = checkpoint["step"]
            curve, losses = checkpoint["curve"], checkpoint["losses"]
            prior_wall, prior_train = checkpoint["wall_time_s"], checkpoint["train_time_s"]
        elif eval_blocks is not None:
            ppl0 = ppl_before if not config.patches else evaluate(trainer.model)
            curve.append({"step": 0, "tokens": 0, "ppl": ppl0})
        step_time = prior_train
        bar = tqdm(total=n_steps, initial=start_step, desc=f"heal {config.recipe}", disable=not progress, unit="step")
        for step in range(start_step, n_steps):
            batch = batch_indices(step, config.batch_size, len(train_blocks), config.seed)
            ids = train_blocks[batch].to(device)
            parts = trainer.step(ids, targets.rows(position[batch]) if targets is not None else None)  # (B, T) batch
            step_time += parts["seconds"]
            done = step + 1
            if done % config.log_every == 0 or done == n_steps:
                losses.append({"step": done, "tokens": done * tokens_per_step, **parts})
            bar.update(1)
            bar.set_postfix(loss=f"{parts['loss']:.3f}", tok_s=f"{tokens_per_step / parts['seconds']:.0f}")
            if config.eval_every and done % config.eval_every == 0 and done < n_steps and eval_blocks is not None:
                curve.append({"step": done, "tokens": done * tokens_per_step, "ppl": evaluate(trainer.model)})
            if config.checkpoint_every and done % config.checkpoint_every == 0 and done < n_steps and checkpoint_dir:
                _save_checkpoint(
                    Path(checkpoint_dir),
                    {
                        "fingerprint": fingerprint, "step": done, "trainer": trainer.state_dict(), "rng": _rng_state(),
                        "curve": curve, "losses": losses, "ppl_before": ppl_before, "train_time_s": step_time,
                        "wall_time_s": prior_wall + time.perf_counter() - t_call,
                    },
                )  # fmt: skip
            if on_step is not None:
                on_step(done, trainer)
        bar.close()
        model = trainer.finish()
        train_time = step_time + patch_time
    ppl_after = evaluate(model)
    if eval_blocks is not None:  # a training-free recipe is one point at zero training tokens
        curve.append({"step": n_steps, "tokens": n_steps * tokens_per_step, "ppl": ppl_after})
    tokens_seen = n_steps * tokens_per_step
    wall = prior_wall + time.perf_counter() - t_call
    result = HealResult(
        model=model,
        config=config,
        out_dir=out_dir,
        tokens_seen=tokens_seen,
        calib_tokens=calib_tokens,
        steps=n_steps,
        train_time_s=train_time,
        wall_time_s=wall,
        tokens_per_s=tokens_seen / (train_time - patch_time) if tokens_seen else 0.0,
        ppl_before=ppl_before,
        ppl_after=ppl_after,
        curve=curve,
        losses=losses,
        patch_fits=[to_jsonable(f) for f in fits],
        resumed_from_step=resumed,
        fingerprint=fingerprint,
        teacher_time_s=teacher_time,
        teacher_tail_mass=tail_mass,
    )
    if out_dir is not None:
        save_healed(out_dir, result, tokenizer, removed=removed_layers(student), meta=meta)
    if checkpoint_dir is not None and Path(checkpoint_dir).exists() and trained is not None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return result


def save_healed(
    out_dir: Path,
    result: HealResult,
    tokenizer: PreTrainedTokenizerBase,
    removed: list[int],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write the healed model as a plain transformers folder + ``frankenllama.json`` + logs, atomically."""
    config = result.config
    record_meta = {
        **(meta or {}),
        "kind": "healed",
        "recipe": config.recipe,
        "removed_layers": removed,
        "fingerprint": result.fingerprint,
        "config": {**config.fingerprint_dict(), "checkpoint_every": config.checkpoint_every},
        "healing": {
            k: getattr(result, k)
            for k in (
                "tokens_seen", "calib_tokens", "steps", "train_time_s", "wall_time_s", "tokens_per_s",
                "ppl_before", "ppl_after", "curve", "patch_fits", "resumed_from_step", "teacher_time_s",
                "teacher_tail_mass",
            )
        },  # fmt: skip
    }
    with atomic_dir(out_dir) as tmp:
        result.model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "losses.csv").write_text(_rows_csv(result.losses))
        (tmp / "eval.csv").write_text(_rows_csv(result.curve))
        record = {"meta": to_jsonable(record_meta), **provenance(record_meta["config"], config.seed)}
        (tmp / META_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return out_dir
