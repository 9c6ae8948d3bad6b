"""Reproducibility and caching: seeds, provenance records, atomic writes, config-keyed caches.

Every expensive intermediate is stored under ``data/cache/<stage>/<key>/`` where ``key`` is a hash
of the frozen config that produced it, next to a ``meta.json`` holding that config, the seed and
the package versions. Writes go to a temporary sibling first and are renamed into place, so an
interrupted run never leaves a partial cache entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from frankenllama.paths import CACHE_DIR

_VERSIONED = ("frankenllama", "torch", "transformers", "peft", "accelerate", "gguf", "numpy", "datasets")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a CPU generator seeded the same way.

    Called once at the entry of each stage, never at import.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths, tuples, numpy and torch scalars → plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.generic, torch.Tensor)) and np.ndim(obj) == 0:
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.dtype):
        return str(obj).removeprefix("torch.")
    return obj


def provenance(config: Any, seed: int | None = None) -> dict[str, Any]:
    """What produced a result: its config, seed, package versions, host and time."""
    return {
        "config": to_jsonable(config),
        "seed": seed,
        "versions": package_versions(),
        "host": {"machine": platform.machine(), "threads": torch.get_num_threads()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def config_key(stage: str, config: Any) -> str:
    """A short stable hash of a stage name and its config."""
    blob = json.dumps({"stage": stage, "config": to_jsonable(config)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2) + "\n")


@contextlib.contextmanager
def atomic_dir(path: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``path`` only if the block finishes.

    On any exception the temporary folder is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True or choose another folder")
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result should read like any other folder
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cache_path(stage: str, config: Any, root: Path = CACHE_DIR) -> Path:
    """The folder that holds (or will hold) ``stage``'s result for ``config``."""
    return root / stage / config_key(stage, config)


def cached_json(
    stage: str,
    config: Any,
    compute: Callable[[], Any],
    seed: int | None = None,
    root: Path = CACHE_DIR,
) -> Any:
    """Return the cached JSON result of ``stage`` for ``config``, computing and storing it if absent.

    The entry holds ``result.json`` and ``meta.json`` (provenance); it appears atomically.
    """
    folder = cache_path(stage, config, root)
    result_file = folder / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    result = to_jsonable(compute())
    with atomic_dir(folder) as tmp:
        (tmp / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        (tmp / "meta.json").write_text(json.dumps(provenance(config, seed), indent=2) + "\n")
    return result


def cached_arrays(
    stage: str,
    config: Any,
    compute: Callable[[], dict[str, np.ndarray]],
    seed: int | None = None,
    root: Path = CACHE_DIR,
) -> dict[str, np.ndarray]:
    """Like ``cached_json`` for a dict of NumPy arrays, stored as ``arrays.npz``."""
    folder = cache_path(stage, config, root)
    array_file = folder / "arrays.npz"
    if array_file.exists():
        with np.load(array_file) as data:
            return {k: data[k] for k in data.files}
    arrays = compute()
    with atomic_dir(folder) as tmp:
        np.savez(tmp / "arrays.npz", **arrays)
        (tmp / "meta.json").write_text(json.dumps(provenance(config, seed), indent=2) + "\n")
    return arrays
