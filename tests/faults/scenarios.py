"""Named fault scenarios: small cached computations on a pico llama that the fault tests run, kill and re-run.

Each scenario is ``function(workdir) -> JSON-able result``: it computes (or reads from the cache
under ``workdir / "cache"``) one stage-like result and returns its numbers, so a test can compare a
run that was killed and re-run with an undisturbed one. The kill driver (``killer.py``) runs them in
forked children; the corruption tests call them in process.

The scenarios here follow the *patterns* of the writes (a cache entry, a model folder, a checkpoint)
on copies; ``stage_scenarios`` runs the real stages (similarity, ablation scan, SLEB's greedy search,
variant save, healing). To cover another stage, add one function and one line to ``SCENARIOS``
(and to ``PREPARE`` if it reads inputs written beforehand); ``KILL_POINTS`` says how many seeded
kill points ``test_fault_kill`` spends on it. A scenario must be deterministic, write only under ``workdir``,
finish in well under a second on the pico model, and recover what it finds broken the way the
real stage does (cache reads do it themselves; model folders: ``verify_folder`` / ``quarantine``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import conftest
import stage_scenarios
from frankenllama.cache import atomic_dir, cached_arrays, cached_json, provenance
from frankenllama.integrity import CorruptEntryError, quarantine, verify_folder, write_manifest
from frankenllama.loss import next_token_nll
from frankenllama.similarity import layer_similarity

CODE = ("frankenllama.similarity", "frankenllama.loss")


def cache_root(workdir: Path) -> Path:
    return Path(workdir) / "cache"


def _model(num_layers: int = 4, seed: int = 0):
    torch.set_num_threads(1)
    return conftest.tiny_llama(num_layers=num_layers, seed=seed)


def _ids(n: int = 4, length: int = 16) -> torch.Tensor:
    return torch.randint(3, 128, (n, length), generator=torch.Generator().manual_seed(0))  # (N, T)


def similarity(workdir: Path) -> dict[str, Any]:
    """Notebook 01's computation through ``cached_arrays`` (an ``arrays.npz`` entry)."""
    model, ids = _model(), _ids()
    arrays = cached_arrays("similarity", {"model": "pico", "blocks": 4}, lambda: layer_similarity(model, ids, batch_size=2).to_arrays(),
                           seed=0, root=cache_root(workdir), code=CODE)
    return {k: np.asarray(v).tolist() for k, v in arrays.items()}


def _block_nll(model, ids: torch.Tensor) -> dict[str, Any]:
    with torch.inference_mode():
        nll = next_token_nll(model(ids).logits, ids)  # (N, T-1)
    return {"block_nll": nll.mean(-1).tolist(), "mean": float(nll.mean())}


def nll_json(workdir: Path) -> dict[str, Any]:
    """A per-block loss through ``cached_json`` (a ``result.json`` entry)."""
    model, ids = _model(), _ids()
    return cached_json("nll", {"model": "pico", "blocks": 4}, lambda: _block_nll(model, ids), seed=0,
                       root=cache_root(workdir), code=CODE)


def model_folder_path(workdir: Path) -> Path:
    return cache_root(workdir) / "variants" / "pico-3"


def save_folder(folder: Path, model, tokenizer, meta: dict[str, Any], preflight: bool = True) -> Path:
    """The pattern a variant / healed-model save follows: atomic folder, weights, config, manifest last.

    ``preflight``: tell ``atomic_dir`` the weights' size, so a disk without room is refused before writing.
    """
    need = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    with atomic_dir(folder, need_bytes=need if preflight else None) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "frankenllama.json").write_text(json.dumps({"meta": meta, **provenance(meta)}, indent=2) + "\n")
        write_manifest(tmp)
    return folder


def model_folder(workdir: Path) -> dict[str, Any]:
    """A model folder (variant-like): verified before use; a failing one is quarantined and saved again."""
    folder = model_folder_path(workdir)
    if folder.exists():
        try:
            verify_folder(folder)
        except CorruptEntryError as err:
            quarantine(folder, "variants", cache_root(workdir), str(err))
    if not folder.exists():
        save_folder(folder, _model(num_layers=3, seed=1), conftest.tiny_tokenizer(), {"layers": 3})
    loaded = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    return _block_nll(loaded, _ids())


def checkpoint(workdir: Path) -> dict[str, Any]:
    """A healing-checkpoint-like write: safetensors for tensors, JSON for the rest, manifest last."""
    folder = cache_root(workdir) / "checkpoints" / "step-2"
    if folder.exists():
        try:
            verify_folder(folder)
        except CorruptEntryError as err:
            quarantine(folder, "checkpoints", cache_root(workdir), str(err))
    if not folder.exists():
        model = _model(num_layers=2, seed=2)
        with atomic_dir(folder) as tmp:
            save_file({k: v.clone() for k, v in model.state_dict().items()}, tmp / "weights.safetensors")  # untie
            (tmp / "state.json").write_text(json.dumps({"step": 2, "run": "pico"}) + "\n")
            write_manifest(tmp)
    weights = load_file(folder / "weights.safetensors")
    return {"step": json.loads((folder / "state.json").read_text())["step"],
            "sum": float(sum(w.double().sum() for w in weights.values()))}


def slow_json(workdir: Path) -> dict[str, Any]:
    """``nll_json`` whose computation takes 0.5 s and logs who computed it (for the concurrency test)."""
    model, ids = _model(), _ids()

    def compute():
        with open(Path(workdir) / "computed.log", "a") as log:
            log.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        return _block_nll(model, ids)

    return cached_json("nll", {"model": "pico", "blocks": 4, "slow": True}, compute, root=cache_root(workdir), code=CODE)


SCENARIOS: dict[str, Callable[[Path], Any]] = {
    "similarity": similarity,
    "nll-json": nll_json,
    "model-folder": model_folder,
    "checkpoint": checkpoint,
    "slow-json": slow_json,
    "similarity-stage": stage_scenarios.similarity_stage_run,
    "ablation-scan": stage_scenarios.ablation_scan,
    "greedy-search": stage_scenarios.greedy_search,
    "variant-save": stage_scenarios.variant_save,
    "heal": stage_scenarios.heal_run,
    "export": stage_scenarios.export_run,
    "similarity-stage-logged": stage_scenarios.similarity_stage_logged,
    "ablation-scan-logged": stage_scenarios.ablation_scan_logged,
}

# inputs a scenario reads, written in the test process before its runs are forked (never killed)
PREPARE: dict[str, Callable[[Path], None]] = {
    name: stage_scenarios.prepare
    for name in ("similarity-stage", "ablation-scan", "greedy-search", "variant-save", "similarity-stage-logged",
                 "ablation-scan-logged")
} | {"export": stage_scenarios.prepare_export}

# seeded SIGKILL points per scenario in test_fault_kill (half at traced lines, half at random times)
KILL_POINTS: dict[str, int] = {
    "similarity": 8, "nll-json": 6, "model-folder": 8, "checkpoint": 4,  # write patterns (26)
    "similarity-stage": 4, "ablation-scan": 5, "greedy-search": 5, "variant-save": 5, "heal": 8,  # real stages (27)
    "export": 4,  # GGUF export (4)
}
