"""Sub-layer surgery: remove attention or MLP sub-blocks separately, physically.

BlockPruner (Zhong et al. 2024, arXiv:2406.10594) observes that a llama block is two residual
sub-blocks, ``x ← x + Attn(norm₁(x))`` and ``x ← x + MLP(norm₂(x))``, of very different importance,
and prunes them separately. Sub-block ids: ``2ℓ`` is the attention of block ℓ, ``2ℓ + 1`` its MLP
(``frankenllama.units``, which also holds ``sublayer_id``, ``describe`` and ``check_sublayer_ids``).

transformers' ``LlamaDecoderLayer`` cannot skip a sub-block, so ``prune_sublayers`` replaces a removed
attention by ``RemovedAttention`` and a removed MLP by ``RemovedMLP`` — modules without parameters
whose output is zero, so the residual addition leaves the stream unchanged — and the norm feeding
it by ``nn.Identity``. The weights are gone (fewer parameters, less compute) and the logits equal
those of the original model with those sub-blocks bypassed. A block losing both sub-blocks is
removed whole with ``frankenllama.surgery.drop_layers``. The surviving attention modules are
renumbered ``0, 1, …`` so the KV cache (whose length transformers reads from cache layer 0) stays
consistent during generation.

Saving and loading: ``save_pretrained`` writes only the surviving weights and records the removed
sub-blocks in ``config.frankenllama["removed_sublayers"]`` as *current* block indices. Plain
``AutoModelForCausalLM.from_pretrained`` cannot rebuild such a model: it re-creates the missing
sub-blocks with random weights (warning that they were "newly initialized"), which gives wrong
outputs. ``load_sublayer_pruned`` (or ``restore_sublayers`` right after ``from_pretrained``) re-applies
the removal and checks that exactly the recorded weights were missing. A model pruned by whole
blocks only (``drop_layers``) stays plain transformers.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from frankenllama.models import decoder_layers
from frankenllama.surgery import SUBLAYER_KEY, drop_layers, renumber_layers
from frankenllama.units import (  # noqa: F401 (sublayer_id and describe re-exported for callers of this module)
    ATTN,
    MLP,
    PARTS,
    check_sublayer_ids,
    describe,
    layer_of,
    part_of,
    sublayer_id,
)


class RemovedAttention(nn.Module):
    """A bypassed attention sub-block: no parameters, zero output (``x + 0 = x``), no KV cache entry."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        return torch.zeros_like(hidden_states), None


class RemovedMLP(nn.Module):
    """A bypassed MLP sub-block: no parameters, zero output."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(hidden_states)


def removed_sublayers(model: PreTrainedModel) -> dict[str, list[int]]:
    """``{"attn": [...], "mlp": [...]}``: current block indices whose sub-block was removed."""
    found: dict[str, list[int]] = {"attn": [], "mlp": []}
    for i, block in enumerate(decoder_layers(model)):
        if isinstance(block.self_attn, RemovedAttention):
            found["attn"].append(i)
        if isinstance(block.mlp, RemovedMLP):
            found["mlp"].append(i)
    return found


def _apply(model: PreTrainedModel, attn: Iterable[int], mlp: Iterable[int]) -> None:
    layers = decoder_layers(model)
    for i in attn:
        layers[i].self_attn = RemovedAttention()
        layers[i].input_layernorm = nn.Identity()
    for i in mlp:
        layers[i].mlp = RemovedMLP()
        layers[i].post_attention_layernorm = nn.Identity()
    record = dict(getattr(model.config, "frankenllama", None) or {})
    record[SUBLAYER_KEY] = removed_sublayers(model)
    model.config.frankenllama = record
    renumber_layers(model)


def prune_sublayers(model: PreTrainedModel, ids: Iterable[int], inplace: bool = False) -> PreTrainedModel:
    """Remove sub-blocks ``ids`` (``2ℓ`` attention, ``2ℓ+1`` MLP of current block ℓ) and return the smaller model.

    Blocks that lose both sub-blocks are dropped whole (``drop_layers``; lineage kept in
    ``config.frankenllama``); the others keep their surviving sub-block. Sub-blocks removed earlier
    stay removed. The source model is untouched unless ``inplace``.
    """
    L = len(decoder_layers(model))
    ids = check_sublayer_ids(ids, L)
    previous = removed_sublayers(model)
    again = [i for i in ids if layer_of(i) in previous[PARTS[part_of(i)]]]
    if again:
        raise ValueError(f"sub-blocks {describe(again)} were already removed")
    attn = set(previous["attn"]) | {layer_of(i) for i in ids if part_of(i) == ATTN}
    mlp = set(previous["mlp"]) | {layer_of(i) for i in ids if part_of(i) == MLP}
    whole = sorted(attn & mlp)
    if len(whole) >= L:
        raise ValueError(f"cannot remove every sub-block of all {L} blocks: keep at least one")
    target = model if inplace else copy.deepcopy(model)
    if whole:
        target = drop_layers(target, whole, inplace=True)
    shift = {old: old - sum(w < old for w in whole) for old in range(L) if old not in whole}
    _apply(target, [shift[i] for i in sorted(attn - set(whole))], [shift[i] for i in sorted(mlp - set(whole))])
    return target


def restore_sublayers(model: PreTrainedModel, missing_keys: Iterable[str] | None = None) -> PreTrainedModel:
    """Re-apply the sub-block removal recorded in ``model.config`` after ``from_pretrained`` (in place).

    ``from_pretrained`` re-creates the removed sub-blocks with random weights; this replaces them by
    the parameter-free bypass modules again. With ``missing_keys`` (``output_loading_info`` of
    ``from_pretrained``), checks that exactly the removed sub-blocks' weights were absent from the
    checkpoint. A model without the record is returned unchanged.
    """
    record = (getattr(model.config, "frankenllama", None) or {}).get(SUBLAYER_KEY)
    if not record:
        return model
    layers = decoder_layers(model)
    attn, mlp = list(record.get("attn", [])), list(record.get("mlp", []))
    bad = [i for i in attn + mlp if not 0 <= i < len(layers)]
    if bad:
        raise ValueError(f"config records removed sub-blocks in blocks {bad}, but the model has {len(layers)} blocks")
    if missing_keys is not None:
        expected = set()
        for i in attn:
            expected |= {f"model.layers.{i}.{n}" for n in _names(layers[i], ("self_attn", "input_layernorm"))}
        for i in mlp:
            expected |= {f"model.layers.{i}.{n}" for n in _names(layers[i], ("mlp", "post_attention_layernorm"))}
        missing = {k for k in missing_keys if k != "lm_head.weight"}
        if missing != expected:
            raise ValueError(
                f"the checkpoint does not match its sub-block record: unexpectedly missing {sorted(missing - expected)[:5]}, "
                f"unexpectedly present {sorted(expected - missing)[:5]}"
            )
    _apply(model, attn, mlp)
    return model


def _names(block: nn.Module, parts: tuple[str, ...]) -> set[str]:
    return {f"{part}.{name}" for part in parts for name, _ in getattr(block, part).named_parameters()}


def load_sublayer_pruned(
    path: str | Path, dtype: str | torch.dtype = "auto", device: str | torch.device = "auto"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a (possibly) sub-block-pruned model folder saved by ``save_pretrained`` / ``save_variant``.

    Loads with transformers, then ``restore_sublayers`` with the loading info, so a damaged or
    mismatched checkpoint is refused instead of silently running random sub-blocks.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from frankenllama.models import load_tokenizer, resolve_device, resolve_dtype

    folder = Path(path)
    config = json.loads((folder / "config.json").read_text())
    target = resolve_device(device)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized" warning is expected here and handled below
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            folder, dtype=resolve_dtype(dtype, target), local_files_only=True, output_loading_info=True
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    if (config.get("frankenllama") or {}).get(SUBLAYER_KEY):
        restore_sublayers(model, info["missing_keys"])
    model.to(target).eval()
    return model, load_tokenizer(folder)
