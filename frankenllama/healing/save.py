"""Saving a healed model as a variant folder, and reading one back as a cache hit.

The folder is a plain transformers model (``AutoModelForCausalLM.from_pretrained`` loads it) written
by ``frankenllama.variants.save_model_folder``, atomically, with ``frankenllama.json`` (the run's
config, fingerprint, seed, recipe, package versions, tokens seen, times, perplexities),
``losses.csv`` and ``eval.csv``. A later run whose fingerprint equals the folder's reads it instead
of retraining.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from frankenllama.healing.recipes import HealConfig
from frankenllama.healing.result import HealResult
from frankenllama.sublayer import load_sublayer_pruned
from frankenllama.variants import META_FILE, intact, save_model_folder

_RECORDED = ("tokens_seen", "calib_tokens", "steps", "train_time_s", "wall_time_s", "tokens_per_s", "ppl_before",
             "ppl_after", "ppl_before_ood", "ppl_after_ood", "block_nll", "curve", "patch_fits", "resumed_from_step", "teacher_time_s", "teacher_tail_mass")  # fmt: skip


def rows_csv(rows: list[dict[str, Any]]) -> str:
    """``rows`` as CSV text, with the union of their keys (in first-seen order) as header."""
    buf = io.StringIO()
    if rows:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


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
        "healing": {k: getattr(result, k) for k in _RECORDED},
    }
    logs = {"losses.csv": rows_csv(result.losses), "eval.csv": rows_csv(result.curve)}
    return save_model_folder(out_dir, result.model, tokenizer, record_meta, seed=config.seed, files=logs)


def load_healed(out_dir: Path, fingerprint: str, config: HealConfig, load: bool = True) -> HealResult | None:
    """The run saved in ``out_dir`` if its fingerprint is ``fingerprint`` (a cache hit), else ``None``.

    ``load=False`` leaves the weights on disk: the result's ``model`` is ``None``.
    """
    meta_file = out_dir / META_FILE
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text()).get("meta", {})
    if meta.get("fingerprint") != fingerprint or not intact(out_dir):  # a damaged folder is quarantined, then healed again
        return None
    # through the sub-layer loader: plain from_pretrained would re-create removed sub-blocks with random weights
    model = load_sublayer_pruned(out_dir, device="cpu")[0] if load else None
    log = out_dir / "losses.csv"
    losses = list(csv.DictReader(io.StringIO(log.read_text()))) if log.exists() else []
    losses = [{k: float(v) for k, v in row.items() if v != ""} for row in losses]
    h = meta["healing"]
    return HealResult(
        model=model, config=config, out_dir=out_dir, tokens_seen=h["tokens_seen"], calib_tokens=h["calib_tokens"],
        steps=h["steps"], train_time_s=h["train_time_s"], wall_time_s=h["wall_time_s"],
        tokens_per_s=h["tokens_per_s"], ppl_before=h["ppl_before"], ppl_after=h["ppl_after"], curve=h["curve"],
        losses=losses, patch_fits=h["patch_fits"], cached=True, fingerprint=fingerprint,
        teacher_time_s=h.get("teacher_time_s", 0.0), teacher_tail_mass=h.get("teacher_tail_mass"),
        ppl_before_ood=h.get("ppl_before_ood"), ppl_after_ood=h.get("ppl_after_ood"), block_nll=h.get("block_nll", {}),
    )  # fmt: skip
