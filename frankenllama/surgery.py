"""Layer surgery: remove whole decoder blocks and get back a real, smaller, vanilla model.

The pruned model is an ordinary transformers model of the same class with fewer blocks:
``config.num_hidden_layers`` (and ``config.layer_types`` where present) describe the new depth, and
every attention module's ``layer_idx`` is renumbered so the KV cache indexes the surviving blocks.
Saved with ``save_pretrained`` it reloads with plain ``AutoModelForCausalLM.from_pretrained``.

Lineage is kept in ``config.frankenllama`` (a plain dict saved in ``config.json``): the original
depth and the original index of every surviving block, so successive drops compose and later stages
(healing, evaluation) know which layers were removed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from torch import nn
from transformers import PreTrainedModel

from frankenllama.models import decoder_layers
from frankenllama.units import check_ids

SUBLAYER_KEY = "removed_sublayers"  # frankenllama.sublayer's record of removed sub-blocks (current block ids)


def check_layer_ids(layers: Iterable[int], num_layers: int, allow_all: bool = False) -> list[int]:
    """Validate block indices against a model of ``num_layers`` blocks; return them sorted.

    Refuses non-integers, out-of-range and duplicate ids, and (unless ``allow_all``) removing every
    block, with a message that says how to fix the call.
    """
    return check_ids(layers, num_layers, "layer", allow_all)


def lineage(model: PreTrainedModel) -> dict[str, Any]:
    """``{"original_num_hidden_layers": L0, "kept_layers": [...]}`` of a (possibly pruned) model."""
    record = getattr(model.config, "frankenllama", None) or {}
    num = len(decoder_layers(model))
    return {
        "original_num_hidden_layers": record.get("original_num_hidden_layers", num),
        "kept_layers": list(record.get("kept_layers", range(num))),
    }


def removed_layers(model: PreTrainedModel) -> list[int]:
    """Original indices of the blocks removed from ``model`` so far (empty for an unpruned model)."""
    record = lineage(model)
    return sorted(set(range(record["original_num_hidden_layers"])) - set(record["kept_layers"]))


def renumber_layers(model: PreTrainedModel) -> None:
    """Number the blocks' attention modules ``0, 1, …`` in order (the KV cache is indexed by ``layer_idx``).

    A block whose attention was removed (``frankenllama.sublayer``) has no cache entry and is skipped,
    so the surviving attentions stay numbered without gaps.
    """
    idx = 0
    for block in decoder_layers(model):
        if not any(hasattr(m, "layer_idx") for m in block.self_attn.modules()):
            continue
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = idx
        idx += 1


def drop_layers(model: PreTrainedModel, layers: Iterable[int], inplace: bool = False) -> PreTrainedModel:
    """Remove decoder blocks ``layers`` (indices into the current model) and return the smaller model.

    The source model is untouched unless ``inplace``; tied input/output embeddings stay tied (one
    deep copy keeps shared parameters shared). An empty ``layers`` returns an unpruned copy.
    """
    blocks = decoder_layers(model)
    drop = set(check_layer_ids(layers, len(blocks)))
    before = lineage(model)
    target = model if inplace else copy.deepcopy(model)
    keep = [i for i in range(len(blocks)) if i not in drop]
    target.model.layers = nn.ModuleList(decoder_layers(target)[i] for i in keep)
    config = target.config
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[i] for i in keep]
    record = dict(getattr(config, "frankenllama", None) or {})
    record.update(original_num_hidden_layers=before["original_num_hidden_layers"],
                  kept_layers=[before["kept_layers"][i] for i in keep])
    if SUBLAYER_KEY in record:  # sub-blocks removed earlier: their record follows the blocks' new indices
        position = {old: new for new, old in enumerate(keep)}
        record[SUBLAYER_KEY] = {part: [position[i] for i in ids if i in position] for part, ids in record[SUBLAYER_KEY].items()}
    config.frankenllama = record
    renumber_layers(target)
    return target
