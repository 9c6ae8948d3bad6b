"""``compress``: a llama-family model to a size target in one call — select, remove, patch, distil, report.

Steps (``STEPS``), each timed and each cached so that re-running the same command continues where a
killed run stopped (``frankenllama.compress.steps``):

1. ``load`` — the model (``frankenllama.models``; anything but a llama-family decoder is refused);
2. ``select`` — the strategy's choice under the target (``fit_budget`` on the pruning stage's
   selection context: similarity, scores and searches on calibration blocks, cached);
3. ``prune`` — remove the chosen blocks or sub-blocks;
4. ``heal`` — the recipe (default: the ReplaceMe linear patch on calibration tokens, then
   distillation from the original through LoRA on its cached top-k targets, merged), resumable
   from its checkpoints;
5. ``evaluate`` — held-out perplexity in and out of domain and zero-shot items, original and compressed;
6. ``speed`` — prefill / decode speed side by side;
7. ``save`` — the compressed model folder with ``report.json`` and ``report.md``, written to a
   temporary folder beside ``out`` and renamed into place (``frankenllama.cache.atomic_dir``).

Bad input fails before anything is written, with one line naming the fix (``CompressError``,
``TargetError``, ``CompressConfigError``). An ``out`` that holds this very run's report is left as
it is (the run is complete) unless ``force`` is given, which rebuilds it from the cached steps (a new
report after a code update costs seconds); any other existing ``out`` needs ``force``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import PreTrainedModel

from frankenllama.budget import Budget, count_params
from frankenllama.cache import atomic_dir, provenance, to_jsonable
from frankenllama.compress import steps
from frankenllama.compress.config import CompressConfig
from frankenllama.compress.report import markdown, perplexity_comparison, speed_summary, zero_shot_comparison
from frankenllama.compress.steps import CompressError
from frankenllama.data import EmptyCorpusError, load_corpus
from frankenllama.eval.tasks import load_task
from frankenllama.healing import parse_recipe
from frankenllama.healing.fingerprint import model_digest
from frankenllama.integrity import write_manifest
from frankenllama.models import UnsupportedModelError, check_architecture, model_folder, num_layers
from frankenllama.paths import resolve_user_path
from frankenllama.stages.common import shared_model
from frankenllama.variants import intact, save_model_folder

STEPS = ("load", "select", "prune", "heal", "evaluate", "speed", "save")
REPORT_JSON, REPORT_MD = "report.json", "report.md"
CODE = ("frankenllama.compress", *steps.SELECT_CODE, *steps.HEAL_CODE, *steps.EVAL_CODE)


@dataclass
class CompressResult:
    """The compressed model (in memory), its folder and its report (``report.json``'s content)."""

    model: PreTrainedModel | None
    out: Path
    report: dict[str, Any]
    complete_before: bool = False  # the folder already held this run: nothing was recomputed or written


class _Clock:
    """Wall time of each step and whether its result was read from the cache; advances a progress bar."""

    def __init__(self) -> None:
        self.times: dict[str, dict[str, Any]] = {}
        self.bar = tqdm(total=len(STEPS), desc="compress", unit="step", file=sys.stderr)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        self.bar.set_description(f"compress: {name}")
        record: dict[str, Any] = {"cached": False}
        started = time.perf_counter()
        yield record
        self.times[name] = {"seconds": round(time.perf_counter() - started, 2), **record}
        self.bar.update(1)


def finished_report(out: Path, config: CompressConfig) -> dict[str, Any] | None:
    """The report in ``out`` if ``out`` is an intact result of this very config, else ``None``."""
    path = out / REPORT_JSON
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return report if report.get("config") == to_jsonable(config) and intact(out) else None


def check_output(out: Path, force: bool) -> None:
    """Refuse an ``out`` that exists (unless ``force``) or is a file, before any work."""
    if out.exists() and not out.is_dir():
        raise CompressError(f"--out {out} is a file; give a folder path")
    if out.exists() and not force:
        raise CompressError(f"--out {out} exists; pass --force to replace it, or choose another folder")


def check_inputs(config: CompressConfig) -> None:
    """Read every text split and zero-shot task the run will read, so that a missing file, an empty split or a
    malformed task fails before any work (``CompressError``), not after the selection and the heal."""
    trained = any(s.trains for s in parse_recipe(config.heal))
    reads = [("--corpus", config.corpus, "calib"), *([("--corpus", config.corpus, "train")] if trained else []),
             ("--corpus", config.corpus, "eval"), ("--ood-corpus", config.ood_corpus, "eval")]
    for flag, corpus, split in reads:
        try:
            load_corpus(corpus, split)
        except EmptyCorpusError:
            raise CompressError(f"{flag} {corpus}: its {split!r} split holds no document (each document goes to a "
                                "split by a hash of its key: about 10 % to eval, 10 % to calib, 80 % to train); give "
                                "more documents, separated by blank lines") from None
        except (OSError, ValueError) as err:
            raise CompressError(f"{flag} {corpus}: {str(err).splitlines()[0]}") from None
    for task in config.tasks:
        try:
            load_task(task)
        except (OSError, ValueError) as err:
            raise CompressError(f"--tasks {task}: {str(err).splitlines()[0]}") from None


def load(name: str) -> tuple[PreTrainedModel, Any]:
    """The model and tokenizer (one shared copy per process); a missing or non-llama model is a ``CompressError``."""
    try:
        check_architecture(model_folder(name))
    except UnsupportedModelError as err:
        raise CompressError(f"{err}; compress needs a llama-family model") from None
    except (OSError, ValueError) as err:
        raise CompressError(str(err).splitlines()[0]) from None
    return shared_model(name)


def sizes(original: PreTrainedModel, compressed: PreTrainedModel, selection: dict[str, Any]) -> dict[str, Any]:
    """Parameters and bytes before and after, and whether the compressed model meets the target's budget."""
    budget = Budget(**selection["budget"])
    before, after = count_params(original), count_params(compressed)
    limit = budget.param_limit()
    if limit is None:  # a block-count budget
        meets = num_layers(compressed) <= int(budget.layer_fraction * num_layers(original) + 1e-9)
    else:
        meets = after <= limit
    return {"params_original": before, "params_compressed": after, "params_ratio": after / before,
            "param_limit": limit, "dtype": budget.dtype, "bytes_original": before * budget.itemsize,
            "bytes_compressed": after * budget.itemsize, "layers_original": num_layers(original),
            "layers_compressed": num_layers(compressed), "meets_target": bool(meets)}  # fmt: skip


def _healed(config: CompressConfig, teacher, tokenizer, student, selection, record) -> tuple[PreTrainedModel, Path, dict]:
    """Heal the student (or save it as it is when the recipe has nothing left to run)."""
    meta = {"base_model": config.model, "strategy": selection["strategy"], "removed_units": selection["removed"],
            "granularity": selection["granularity"], "target": config.target}  # fmt: skip
    result, note, folder = steps.heal_student(config, teacher, tokenizer, student, model_digest(student), meta)
    if result is None:
        record["cached"] = intact(folder) and folder.is_dir()
        if not record["cached"]:
            save_model_folder(folder, student, tokenizer, {**meta, "kind": "pruned"}, seed=config.seed)
        return student, folder, {"recipe": "none", "note": note}
    record["cached"] = result.cached
    summary = {**result.summary(), "note": note, "tokens_seen": result.tokens_seen, "resumed_from_step": result.resumed_from_step,
               "patch_fits": result.patch_fits, "fingerprint": result.fingerprint, "teacher_tail_mass": result.teacher_tail_mass}
    return result.model, folder, summary


def compress(config: CompressConfig, out: str | Path, force: bool = False, command: str | None = None) -> CompressResult:
    """Compress ``config.model`` to ``config.target`` and save it with its report in ``out`` (see the module docstring)."""
    out = resolve_user_path(out)
    done = None if force else finished_report(out, config)
    if done is not None:
        print(f"compress: {out} already holds this run (report.json); nothing to do (--force rebuilds it)",
              file=sys.stderr)
        return CompressResult(None, out, done, complete_before=True)
    check_output(out, force)
    check_inputs(config)
    started = time.perf_counter()
    teacher, tokenizer = load(config.model)
    steps.strategy_budgets(config, teacher)  # a target the model meets, or one removing every block, fails here
    clock = _Clock()
    with clock.step("load"):
        teacher_id = model_digest(teacher)
    clock.times["load"]["seconds"] = round(time.perf_counter() - started, 2)
    with clock.step("select") as record:
        ran = []
        selection = steps.select(config, teacher, teacher_id, ran)
        record["cached"] = not ran
    with clock.step("prune"):
        student = steps.prune(teacher, selection)
    with clock.step("heal") as record:
        compressed, folder, healing = _healed(config, teacher, tokenizer, student, selection, record)
        compressed.eval()
        compressed_id = model_digest(compressed)
    with clock.step("evaluate") as record:
        ran = []
        evals = {name: steps.evaluate(m, tokenizer, i, config, ran)
                 for name, m, i in (("original", teacher, teacher_id), ("compressed", compressed, compressed_id))}
        record["cached"] = not ran
    with clock.step("speed") as record:
        ran = []
        table = steps.speed(teacher, compressed, (teacher_id, compressed_id), config, ran)
        record["cached"] = not ran
    report = {
        "command": command or f"python -m frankenllama compress --model {config.model} --target {config.target} --out {out}",
        "config": to_jsonable(config),
        "target": {"text": config.target, "kind": config.parsed_target.kind, "description": config.parsed_target.describe()},
        "choice": selection, "size": sizes(teacher, compressed, selection), "healing": healing,
        "perplexity": {domain: {"corpus": corpus, **perplexity_comparison(
            evals["original"]["nll"][domain], evals["compressed"]["nll"][domain], config.n_boot, config.seed)}
            for domain, corpus in (("in-domain", config.corpus), ("out-of-domain", config.ood_corpus))},
        "zero_shot": zero_shot_comparison(evals["original"]["tasks"], evals["compressed"]["tasks"], config.n_boot, config.seed),
        "speed": speed_summary(table), "speed_table": table, "ids": {"original": teacher_id, "compressed": compressed_id},
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:
        started = time.perf_counter()
        shutil.copytree(folder, tmp, dirs_exist_ok=True)  # the model folder; its manifest is rewritten below
        clock.times["save"] = {"seconds": round(time.perf_counter() - started, 2), "cached": False}
        report["steps"] = clock.times
        report["wall_time_s"] = round(sum(t["seconds"] for t in clock.times.values()), 2)
        report["provenance"] = provenance(config, config.seed, CODE)
        (tmp / REPORT_JSON).write_text(json.dumps(to_jsonable(report), indent=2) + "\n")
        (tmp / REPORT_MD).write_text(markdown(report))
        write_manifest(tmp)
    clock.bar.update(1)
    clock.bar.close()
    return CompressResult(compressed, out, report)
