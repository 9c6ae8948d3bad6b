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

from frankenllama import paths
from frankenllama.cache import atomic_dir, provenance, to_jsonable
from frankenllama.integrity import MANIFEST_FILE, CorruptEntryError, quarantine, verify_folder, write_manifest

META_FILE = "frankenllama.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class VariantInfo:
    name: str
    path: Path
    meta: dict[str, Any]


def save_model_folder(
    folder: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    meta: dict[str, Any],
    seed: int | None = None,
    files: dict[str, str] | None = None,
) -> Path:
    """Save ``model`` + ``tokenizer`` as a plain transformers folder with ``frankenllama.json``, atomically.

    ``files``: extra text files to write beside the weights, ``{file name: text}`` (e.g. a loss log).
    A full or read-only disk raises ``frankenllama.cache.CacheWriteError`` naming ``folder`` and the
    weights' size; nothing is kept.
    """
    weights = {t.data_ptr(): t.numel() * t.element_size() for t in model.state_dict().values()}  # tied once
    with atomic_dir(folder, need_bytes=sum(weights.values())) as tmp:  # a disk without room is refused up front
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
        record = {"meta": to_jsonable(meta), **provenance(meta.get("config"), seed)}
        (tmp / META_FILE).write_text(json.dumps(record, indent=2) + "\n")
        write_manifest(tmp)  # checksums of every file, checked whenever the folder is loaded
    return folder


def _root(root: Path | None) -> Path:
    """``root``, or the store under the cache folder, looked up when called (tests point it elsewhere)."""
    return paths.VARIANTS_DIR if root is None else Path(root)


def variant_path(name: str, root: Path | None = None) -> Path:
    if not _NAME.match(name):
        raise ValueError(f"variant name {name!r} must be letters, digits, '.', '_', '+' or '-'")
    return _root(root) / name


def save_variant(
    name: str,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    meta: dict[str, Any],
    seed: int | None = None,
    root: Path | None = None,
) -> Path:
    """Store ``model`` as variant ``name`` (replacing an older one of that name)."""
    return save_model_folder(variant_path(name, root), model, tokenizer, meta, seed)


def intact(folder: Path) -> bool:
    """Whether saved model folder ``folder`` matches its checksums; a damaged one is quarantined (with a warning).

    Folders saved before checksums existed (no manifest) count as intact.
    """
    if not (folder / MANIFEST_FILE).exists() and not any(folder.glob("*.bin")):
        return True
    try:
        verify_folder(folder)
    except CorruptEntryError as err:
        quarantine(folder, "variants", paths.CACHE_DIR, str(err))
        return False
    return True


def list_variants(root: Path | None = None) -> list[VariantInfo]:
    """Every complete variant in the store, sorted by name."""
    root = _root(root)
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(root.iterdir()):
        meta_file = folder / META_FILE
        if folder.name.startswith(".") or not meta_file.is_file():
            continue
        out.append(VariantInfo(folder.name, folder, json.loads(meta_file.read_text())["meta"]))
    return out


def load_variant(name: str, dtype: str = "auto", device: str = "auto", root: Path | None = None):
    """Load variant ``name`` as ``(model, tokenizer)``."""
    from frankenllama.models import load_model

    path = variant_path(name, root)
    if (path / META_FILE).is_file() and not intact(path):
        raise KeyError(f"variant {name!r} was damaged and moved to the cache's .quarantine folder; "
                       "run the notebook that creates it again")
    if not (path / META_FILE).is_file():
        known = [v.name for v in list_variants(root)]
        raise KeyError(f"no variant {name!r} in {_root(root)}; known variants: {known}. Run the notebook that creates it first")
    return load_model(path, dtype=dtype, device=device, verify=False)  # intact() has just checked it
