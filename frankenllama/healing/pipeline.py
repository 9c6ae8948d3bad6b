"""``heal``: run a recipe on a pruned model at a token budget, resumably, and save the result.

One call does, in order: validate everything (recipe, teacher, LoRA targets, checkpoint;
``validate``); fingerprint the run (``fingerprint``); reuse a saved result with that fingerprint
(``save``); apply the training-free patch if the recipe starts with one (``patch``); train for
``tokens // (batch_size · T)`` steps with a progress bar, a loss log, eval-perplexity points and
periodic checkpoints (``loop``); merge; save.

Resuming. Every ``checkpoint_every`` steps the trainable weights, optimizer, scheduler, RNG states,
step counter, logs and elapsed time are written atomically to the checkpoint folder together with
the run's fingerprint (config minus the checkpoint cadence, the student's and teacher's weights,
the data), as safetensors + JSON without pickles (``checkpoint``). A later call with the same
inputs resumes from it and ends bit-identical to an uninterrupted run (the data order is a pure
function of seed and step); a call with different inputs refuses the folder instead of silently
mixing runs.

Saving. The healed model is written as a plain transformers folder (loadable by
``AutoModelForCausalLM.from_pretrained``, and a ``frankenllama.variants`` variant when ``out_dir`` is
a variant path) with ``frankenllama.json`` (config, seed, recipe, package versions, tokens seen,
wall time, tokens/s, perplexities), ``losses.csv`` and ``eval.csv``. The folder appears atomically:
a run that fails or is killed leaves no partial output. A folder whose fingerprint matches is reused
as a cache hit instead of retraining.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from frankenllama.cache import atomic_write_text, seed_everything, to_jsonable
from frankenllama.healing.checkpoint import (default_checkpoint_dir, discard_checkpoints, load_checkpoint,
                                            save_checkpoint)
from frankenllama.healing.fingerprint import input_digests, run_fingerprint
from frankenllama.healing.loop import HeldOut, TrainLog, nll_ppl, train
from frankenllama.healing.patch import TeacherStreams, linear_patch
from frankenllama.healing.recipes import HealConfig
from frankenllama.healing.result import HealResult
from frankenllama.healing.save import load_healed, rows_csv, save_healed
from frankenllama.healing.trainer import RecipeTrainer
from frankenllama.healing.validate import validate_run
from frankenllama.surgery import removed_layers


def _block_nll(before: dict, after: dict) -> dict[str, list[float]]:
    """Per-block mean NLLs before and after healing, keyed ``before``/``after`` (in domain) and ``…_ood``."""
    out = {"before": before["in"], "after": after["in"], "before_ood": before["out"], "after_ood": after["out"]}
    return {k: v for k, v in out.items() if v is not None}


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
    ood_blocks: torch.Tensor | None = None,
    out_dir: Path | None = None,
    checkpoint_dir: Path | None = None,
    meta: dict[str, Any] | None = None,
    eval_batch_size: int = 4,
    progress: bool = True,
    on_step: Callable[[int, RecipeTrainer], None] | None = None,
    accelerator: Any | None = None,
    copy_student: bool = True,
    student_nll: Callable[[HeldOut], tuple[dict[str, list[float] | None], float]] | None = None,
    teacher_streams: TeacherStreams | None = None,
    load_cached: bool = True,
) -> HealResult:
    """Heal ``student`` with ``config.recipe`` and return the healed model with its costs and curves.

    Args:
        student: the pruned model; not modified (the run works on a copy) unless ``copy_student=False``.
        tokenizer: the student's tokenizer, saved beside the healed weights.
        config: the frozen run config (recipe, token budget, optimizer, recipe options).
        train_blocks: ``(N, T)`` training token blocks (e.g. the ``train`` split of ``wiki-leads``);
            required by trained recipes.
        teacher: the unpruned model; required by distillation and by the linear patch.
        teacher_tokenizer: if given, checked to map tokens to the same ids as ``tokenizer``.
        calib_blocks: ``(N, T)`` calibration blocks for the patch (default: the first training blocks).
        eval_blocks: ``(N, T)`` held-out blocks; perplexity before, every ``eval_every`` steps, after.
        ood_blocks: ``(N, T)`` held-out blocks of another domain (text never trained or calibrated on),
            evaluated alongside ``eval_blocks`` (curve key ``ppl_ood``); ``None``: in-domain only.
        out_dir: where to save the healed model (atomically); ``None`` saves nothing.
        checkpoint_dir: where checkpoints go (default: hidden beside ``out_dir``).
        meta: extra metadata for ``frankenllama.json`` (e.g. how the student was pruned).
        on_step: called as ``on_step(step, trainer)`` after every optimizer step (tests use it to
            inspect the adapter model or to simulate a killed run by raising).
        accelerator: an ``accelerate.Accelerator`` (under ``accelerate launch``): train data-parallel
            (``frankenllama.healing.loop``); every process returns the healed model, only the main
            process writes checkpoints and ``out_dir``. ``frankenllama.healing.launch`` is the script.
        copy_student: ``False`` trains ``student`` itself (modified in place: no second copy of the
            weights in memory, for a model loaded just for this run, as the launch script does).
        student_nll: given the run's ``HeldOut``, returns the student's per-block NLLs on it (as
            ``HeldOut.nll``) and the seconds that measurement took, when several runs share one
            measurement (``compare_recipes``); called only when the run is not a cache hit. Its seconds
            count in ``wall_time_s`` as if this run had measured them itself.
        teacher_streams: the teacher's streams on the calibration blocks, shared by the linear patches
            of several runs (``linear_patch``); the patch is the same without them, and each run's patch
            time and wall time count the teacher pass it would have made alone (``TeacherStreams.credit_s``).
        load_cached: on a cache hit (``out_dir`` holds this run), load the saved model into the result;
            ``False`` returns the run's record with ``model=None`` (the folder's integrity still checked),
            for a caller that only reads the record back (notebook 05 re-reading its variants).
    """
    t_call = time.perf_counter()
    plan = validate_run(student, tokenizer, config, train_blocks, teacher, teacher_tokenizer, calib_blocks)
    digests = input_digests(config, student, teacher, train_blocks, plan.calib_blocks, eval_blocks, ood_blocks)
    fingerprint = run_fingerprint(config, digests)
    out_dir = Path(out_dir) if out_dir is not None else None
    cached = load_healed(out_dir, fingerprint, config, load=load_cached) if out_dir is not None else None
    if cached is not None:
        # a run killed after saving but before removing its checkpoints left them: they are obsolete
        stale = default_checkpoint_dir(out_dir) if checkpoint_dir is None else Path(checkpoint_dir)
        discard_checkpoints(stale, fingerprint)
        return cached
    if checkpoint_dir is None and out_dir is not None:
        checkpoint_dir = default_checkpoint_dir(out_dir)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None and plan.trained is not None else None
    checkpoint = load_checkpoint(checkpoint_dir, fingerprint) if checkpoint_dir is not None else None
    prior_wall = checkpoint["wall_time_s"] if checkpoint is not None else 0.0

    def save(step: int, state: dict[str, Any]) -> None:
        save_checkpoint(checkpoint_dir, fingerprint, step, {**state, "wall_time_s": prior_wall + time.perf_counter() - t_call})
        atomic_write_text(checkpoint_dir / "losses.csv", rows_csv(state["losses"]))  # for a look at a running heal

    seed_everything(config.seed)
    work = copy.deepcopy(student) if copy_student else student
    held_out = HeldOut(eval_blocks, ood_blocks if eval_blocks is not None else None, eval_batch_size)
    credit = 0.0  # seconds a shared measurement of the student took minus the seconds spent fetching it here
    if student_nll is None:
        nll_before = held_out.nll(work)  # deterministic: measured again on a resume
    else:
        t_fetch = time.perf_counter()
        nll_before, measured_s = student_nll(held_out)
        credit = measured_s - (time.perf_counter() - t_fetch)
    t_patch = time.perf_counter()  # the patch is deterministic: redone on resume, before the trained state is loaded
    streams_before = teacher_streams.credit_s if teacher_streams is not None else 0.0
    fits = linear_patch(work, teacher, plan.calib_blocks, config.patch_layers, config.patch_ridge, streams=teacher_streams) if config.patches else []
    shared = teacher_streams.credit_s - streams_before if teacher_streams is not None else 0.0  # this fit's own teacher pass, as if alone
    patch_time = time.perf_counter() - t_patch + shared
    credit += shared
    if plan.trained is None:
        model, log = work, TrainLog()
    else:
        model, log = train(
            work, config, plan, train_blocks=train_blocks, teacher=teacher, teacher_digest=digests["teacher"],
            held_out=held_out, nll_before=nll_before, checkpoint=checkpoint,
            save=save if checkpoint_dir is not None else None, progress=progress, on_step=on_step, accelerator=accelerator,
        )  # fmt: skip
    nll_after = held_out.nll(model)
    tokens_seen = plan.n_steps * plan.tokens_per_step
    if eval_blocks is not None:  # a training-free recipe is one point at zero training tokens
        log.curve.append(held_out.point(model, plan.n_steps, tokens_seen, nll_after))
    result = HealResult(
        model=model, config=config, out_dir=out_dir, tokens_seen=tokens_seen, calib_tokens=sum(f.tokens for f in fits),
        steps=plan.n_steps, train_time_s=log.train_time_s + patch_time,
        wall_time_s=prior_wall + time.perf_counter() - t_call + credit,
        tokens_per_s=tokens_seen / log.train_time_s if tokens_seen else 0.0, ppl_before=nll_ppl(nll_before["in"]),
        ppl_after=nll_ppl(nll_after["in"]), ppl_before_ood=nll_ppl(nll_before["out"]),
        ppl_after_ood=nll_ppl(nll_after["out"]), block_nll=_block_nll(nll_before, nll_after), curve=log.curve, losses=log.losses, patch_fits=[to_jsonable(f) for f in fits],
        resumed_from_step=log.resumed_from_step, fingerprint=fingerprint, teacher_time_s=log.teacher_time_s,
        teacher_tail_mass=log.teacher_tail_mass,
    )  # fmt: skip
    main = accelerator is None or accelerator.is_main_process
    if out_dir is not None and main:
        save_healed(out_dir, result, tokenizer, removed=removed_layers(student), meta=meta)
    if checkpoint_dir is not None and main:
        discard_checkpoints(checkpoint_dir)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return result
