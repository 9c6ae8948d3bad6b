"""Pickle-free healing checkpoints: tensors as safetensors, everything else as JSON.

A checkpoint folder holds::

    checkpoint.json              format, the run's fingerprint, the step, the name and SHA-256 of
                                 the tensor file, and the rest of the state as tagged JSON
    tensors-<step>.safetensors   every tensor of the state (trainable weights, optimizer moments,
                                 the torch RNG states)
    losses.csv                   the loss log so far, for a human to look at

Loading never unpickles: JSON and safetensors can only describe data, so a crafted file cannot
run code when read (``torch.load(weights_only=False)``, what the workbook used before, can). A
folder that holds the old pickled ``checkpoint.pt``, an unreadable index, an index of another
format or a tensor file whose checksum does not match is refused with ``CheckpointFormatError``;
one from a run with another fingerprint with ``CheckpointMismatchError``.

The JSON encoding is exact and typed: tuples, dicts with non-string keys (the optimizer's
``{param_id: state}``) and NumPy arrays (NumPy's RNG state) are tagged so that decoding rebuilds
the very values that were saved; floats round-trip exactly through ``repr``. Writing is atomic:
the tensor file is written under a new name first and the index is renamed into place last, so a
run killed at any instant leaves the previous complete checkpoint readable; a full or read-only
disk raises ``frankenllama.cache.CacheWriteError`` naming the file and the bytes it needed.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from frankenllama.cache import atomic_file, atomic_write_text

INDEX_FILE = "checkpoint.json"
LEGACY_FILE = "checkpoint.pt"  # the pickled format of earlier versions: refused, never loaded
FORMAT = "frankenllama-heal-checkpoint/1"
_TENSOR_FILE = re.compile(r"^tensors-\d+\.safetensors$")


class CheckpointMismatchError(ValueError):
    """A checkpoint folder holds a run with a different configuration, model or data."""


class CheckpointFormatError(CheckpointMismatchError):
    """A checkpoint folder holds something that is not a readable checkpoint of this format."""


def default_checkpoint_dir(out_dir: Path) -> Path:
    """``<parent>/.<name>.checkpoints``: hidden beside the output, so list_variants skips it."""
    return out_dir.parent / f".{out_dir.name}.checkpoints"


def discard_checkpoints(folder: Path, fingerprint: str | None = None) -> None:
    """Remove checkpoint ``folder`` of a finished run: renamed aside first, then deleted.

    A run killed while deleting leaves a ``<name>.<pid>.tmp`` folder (removed by the next call, the
    next write of the output folder or ``cache verify --fix``), never a half-deleted folder that a
    later run would refuse as a damaged checkpoint. With ``fingerprint``, a folder holding a
    checkpoint of another run is kept (that run may still resume from it).
    """
    for trash in folder.parent.glob(f"{glob.escape(folder.name)}.*.tmp"):  # left by a run killed while deleting
        shutil.rmtree(trash, ignore_errors=True)
    if not folder.exists():
        return
    if fingerprint is not None and (folder / INDEX_FILE).is_file():
        try:
            if json.loads((folder / INDEX_FILE).read_text(encoding="utf-8")).get("fingerprint") != fingerprint:
                return
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            pass  # an unreadable index: no run can resume from it
    trash = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


# --------------------------------------------------------------------------- RNG state
def rng_state() -> dict[str, Any]:
    """The state of every random number generator a training step may draw from."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- tagged JSON
def encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """``obj`` as JSON values; its tensors are moved into ``tensors`` (CPU) and referenced by key.

    The allow-list: tensors, NumPy arrays, tuples, lists, dicts, str, int, float, bool, None.
    """
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.dtype.str, "shape": list(obj.shape), "data": obj.ravel().tolist()}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [encode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode(v, tensors) for k, v in obj.items()}
        return {"__items__": [[encode(k, tensors), encode(v, tensors)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"a healing checkpoint cannot hold a {type(obj).__name__}: {obj!r:.80}")


def decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of ``encode``."""
    if isinstance(obj, list):
        return [decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return np.asarray(obj["data"], dtype=np.dtype(obj["__ndarray__"])).reshape(obj["shape"])
    if "__tuple__" in obj:
        return tuple(decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {decode(k, tensors): decode(v, tensors) for k, v in obj["__items__"]}
    return {k: decode(v, tensors) for k, v in obj.items()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- save / load
def save_checkpoint(folder: Path, fingerprint: str, step: int, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, scalars, lists, dicts, RNG states) as checkpoint ``step`` of run ``fingerprint``.

    Each file goes through a temporary file renamed into place (``frankenllama.cache.atomic_file``);
    a full or read-only disk raises ``CacheWriteError`` naming the file and the bytes it needed, and
    the previous checkpoint stays readable.
    """
    tensors: dict[str, torch.Tensor] = {}
    encoded = encode(state, tensors)
    name = f"tensors-{step:08d}.safetensors"
    with atomic_file(folder / name, need_bytes=sum(t.numel() * t.element_size() for t in tensors.values())) as tmp:
        save_file(tensors, tmp)
    index = {"format": FORMAT, "fingerprint": fingerprint, "step": step, "tensors": name,
             "sha256": _sha256(folder / name), "state": encoded}  # fmt: skip
    atomic_write_text(folder / INDEX_FILE, json.dumps(index) + "\n")
    for old in folder.glob("tensors-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def _refuse(folder: Path, why: str) -> CheckpointFormatError:
    return CheckpointFormatError(
        f"checkpoint folder {folder} {why}; it was not loaded. Delete the folder (the run restarts from "
        "step 0) or pass another checkpoint_dir"
    )


def _read_index(folder: Path) -> dict[str, Any] | None:
    path = folder / INDEX_FILE
    if not path.is_file():
        if (folder / LEGACY_FILE).exists():
            raise _refuse(folder, f"holds a pickled {LEGACY_FILE} (an older format, or not a checkpoint at all): "
                                  "unpickling can run arbitrary code")  # fmt: skip
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise _refuse(folder, f"holds an unreadable {INDEX_FILE} ({type(err).__name__})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise _refuse(folder, f"holds a {INDEX_FILE} that is not a {FORMAT} index")
    return index


def load_checkpoint(folder: Path, fingerprint: str) -> dict[str, Any] | None:
    """The state saved by ``save_checkpoint`` plus ``"step"``, or ``None`` if ``folder`` holds none.

    Raises ``CheckpointMismatchError`` for a checkpoint of another run, ``CheckpointFormatError`` for
    anything that is not an intact checkpoint of this format; neither unpickles anything.
    """
    index = _read_index(folder)
    if index is None:
        return None
    if index.get("fingerprint") != fingerprint:
        raise CheckpointMismatchError(
            f"checkpoint folder {folder} holds a run with a different configuration, model or data "
            f"(fingerprint {index.get('fingerprint')} ≠ {fingerprint}); refusing to resume from it. "
            "Delete the folder or pass another checkpoint_dir"
        )
    name = index.get("tensors")
    if not isinstance(name, str) or not _TENSOR_FILE.match(name) or not (folder / name).is_file():
        raise _refuse(folder, f"names a tensor file {name!r} that is missing or not a checkpoint's")
    if _sha256(folder / name) != index.get("sha256"):
        raise _refuse(folder, f"holds a tensor file {name} whose checksum does not match its index (truncated or altered)")
    try:
        tensors = load_file(folder / name)
        state = decode(index["state"], tensors)
    except Exception as err:  # safetensors' own error type, a KeyError of a missing tensor, …
        raise _refuse(folder, f"holds an unreadable checkpoint ({type(err).__name__}: {err})") from None
    return {**state, "step": int(index["step"])}
