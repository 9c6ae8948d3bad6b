"""A store of model variants (pruned, healed, …) that one notebook writes and later ones read.

Each variant is a plain transformers folder under ``data/cache/variants/<name>/`` (loadable with
``AutoModelForCausalLM.from_pretrained``) with ``frankenllama.json`` beside the weights: what the
variant is (its metadata: strategy, removed layers, recipe, …) and its provenance.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from frankenllama.cache import atomic_dir, provenance, to_jsonable
from frankenllama.paths import VARIANTS_DIR

META_FILE = "frankenllama.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class VariantInfo:
    name: str
    path: Path
    meta: dict[str, Any]


def save_model_folder(
    folder: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, meta: dict[str, Any], seed: int | None = None
) -> Path:
    """Save ``model`` + ``tokenizer`` as a plain transformers folder with ``frankenllama.json``, atomically."""
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        record = {"meta": to_jsonable(meta), **provenance(meta.get("config"), seed)}
        (tmp / META_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return folder


def variant_path(name: str, root: Path = VARIANTS_DIR) -> Path:
    if not _NAME.match(name):
        raise ValueError(f"variant name {name!r} must be letters, digits, '.', '_', '+' or '-'")
    return root / name


def save_variant(
    name: str,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    meta: dict[str, Any],
    seed: int | None = None,
    root: Path = VARIANTS_DIR,
) -> Path:
    """Store ``model`` as variant ``name`` (replacing an older one of that name)."""
    return save_model_folder(variant_path(name, root), model, tokenizer, meta, seed)


def list_variants(root: Path = VARIANTS_DIR) -> list[VariantInfo]:
    """Every complete variant in the store, sorted by name."""
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(root.iterdir()):
        meta_file = folder / META_FILE
        if folder.name.startswith(".") or not meta_file.is_file():
            continue
        out.append(VariantInfo(folder.name, folder, json.loads(meta_file.read_text())["meta"]))
    return out


def load_variant(name: str, dtype: str = "auto", device: str = "auto", root: Path = VARIANTS_DIR):
    """Load variant ``name`` as ``(model, tokenizer)``."""
    from frankenllama.models import load_model

    path = variant_path(name, root)
    if not (path / META_FILE).is_file():
        known = [v.name for v in list_variants(root)]
        raise KeyError(f"no variant {name!r} in {root}; known variants: {known}. Run the notebook that creates it first")
    return load_model(path, dtype=dtype, device=device)
