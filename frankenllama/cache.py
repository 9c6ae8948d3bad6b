"""Reproducibility and caching: seeds, provenance records, atomic writes, config- and code-keyed caches.

Every expensive intermediate is stored under ``data/cache/<stage>/<key>/`` where ``key`` is a hash
of the frozen config that produced it *and of the code that computes it*, next to a ``meta.json``
holding that config, the code version, the seed and the package versions. Writes go to a
temporary sibling first and are renamed into place, so an interrupted run never leaves a partial
cache entry.

What invalidates what: a stage names the modules (or packages) whose code computes its result
(``code=("frankenllama.scoring", …)``); ``code_version`` hashes their syntax trees with docstrings
removed, so editing a comment, a docstring or the layout of a line keeps the cache, while any
change to what the code does (a default, an expression, a new argument) makes a new key and the
result is recomputed. Results of older code stay on disk until ``make clean``; they are never read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ast
import functools
import hashlib
import importlib.util
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

from frankenllama import paths

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


def provenance(config: Any, seed: int | None = None, code: tuple[str, ...] = ()) -> dict[str, Any]:
    """What produced a result: its config, seed, code version, package versions, host and time."""
    return {
        "config": to_jsonable(config),
        "seed": seed,
        "code": {"modules": sorted(set(code)), "version": code_version(tuple(code))} if code else None,
        "versions": package_versions(),
        "host": {"machine": platform.machine(), "threads": torch.get_num_threads()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _module_files(name: str) -> list[Path]:
    """The source files of module or package ``name`` (every ``.py`` below a package), sorted."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"no module named {name!r} to version a cache by")
    origin = Path(spec.origin)
    return sorted(origin.parent.rglob("*.py")) if spec.submodule_search_locations else [origin]


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


@functools.lru_cache(maxsize=None)
def _file_version(path: Path, mtime_ns: int) -> str:
    tree = _strip_docstrings(ast.parse(path.read_text(), filename=str(path)))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def code_version(modules: tuple[str, ...]) -> str:
    """A short hash of what ``modules`` compute: their syntax trees without docstrings or comments."""
    digest = hashlib.sha256()
    for name in sorted(set(modules)):
        for path in _module_files(name):
            digest.update(f"{name}:{path.name}:{_file_version(path, path.stat().st_mtime_ns)}".encode())
    return digest.hexdigest()[:16]


def config_key(stage: str, config: Any, code: tuple[str, ...] = ()) -> str:
    """A short stable hash of a stage name, its config and (when given) the version of its code."""
    payload = {"stage": stage, "config": to_jsonable(config)}
    if code:
        payload["code"] = code_version(tuple(code))
    blob = json.dumps(payload, sort_keys=True)
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


def cache_path(stage: str, config: Any, root: Path | None = None, code: tuple[str, ...] = ()) -> Path:
    """The folder that holds (or will hold) ``stage``'s result for ``config`` computed by ``code``.

    ``root``: the cache folder; ``None`` reads ``frankenllama.paths.CACHE_DIR`` at call time (tests
    point that at a temporary folder).
    """
    return (paths.CACHE_DIR if root is None else root) / stage / config_key(stage, config, code)


def cached_json(
    stage: str,
    config: Any,
    compute: Callable[[], Any],
    seed: int | None = None,
    root: Path | None = None,
    code: tuple[str, ...] = (),
) -> Any:
    """Return the cached JSON result of ``stage`` for ``config``, computing and storing it if absent.

    The entry holds ``result.json`` and ``meta.json`` (provenance); it appears atomically. ``code``:
    the modules whose code computes the result (see ``code_version``); part of the key.
    """
    folder = cache_path(stage, config, root, code)
    result_file = folder / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    result = to_jsonable(compute())
    with atomic_dir(folder) as tmp:
        (tmp / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        (tmp / "meta.json").write_text(json.dumps(provenance(config, seed, code), indent=2) + "\n")
    return result


def cached_arrays(
    stage: str,
    config: Any,
    compute: Callable[[], dict[str, np.ndarray]],
    seed: int | None = None,
    root: Path | None = None,
    code: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """Like ``cached_json`` for a dict of NumPy arrays, stored as ``arrays.npz``."""
    folder = cache_path(stage, config, root, code)
    array_file = folder / "arrays.npz"
    if array_file.exists():
        with np.load(array_file) as data:
            return {k: data[k] for k in data.files}
    arrays = compute()
    with atomic_dir(folder) as tmp:
        np.savez(tmp / "arrays.npz", **arrays)
        (tmp / "meta.json").write_text(json.dumps(provenance(config, seed, code), indent=2) + "\n")
    return arrays
