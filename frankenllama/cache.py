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

What survives what: ``meta.json`` records the SHA-256 and size of the payload, and every read
checks them (``frankenllama.integrity``): a truncated, zero-length, bit-flipped or missing payload,
an unreadable ``meta.json`` or a meta of another code version moves the entry to
``data/cache/.quarantine/`` with a warning, and it is recomputed. Each key has a lock
(``frankenllama.locks``): of two runs asking for one key, one computes and the other waits and reads.
Entries appear by one rename after their files are flushed, so a run killed at any instant leaves
either the whole entry or none (its temporary folder is removed by the next writer). A write that
fails for lack of space or permission raises ``CacheWriteError`` naming the folder and the bytes
it needed, and keeps nothing.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import errno
import glob
import functools
import hashlib
import importlib.util
import json
import os
import platform
import random
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from frankenllama import paths
from frankenllama.integrity import META_FILE, CorruptEntryError, check_entry, file_records, quarantine
from frankenllama.locks import entry_lock

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


# ``dataclasses.field(..., metadata=NOT_IN_KEY)``: a config setting that changes where or how a result
# is computed, never what (e.g. where cached residual streams wait): left out of ``to_jsonable``, so
# it enters no cache key and a run with another value reads the same cached result.
NOT_IN_KEY = {"cache_key": False}


def to_jsonable(obj: Any) -> Any:
    """Dataclasses (less their ``NOT_IN_KEY`` fields), paths, tuples, numpy and torch scalars → plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.metadata.get("cache_key", True)}
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


# --------------------------------------------------------------------------------------------------
# Writing: atomic, locked, and a clear error when the disk is full or read-only
# --------------------------------------------------------------------------------------------------

_WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


class CacheWriteError(OSError):
    """A result could not be written (disk full, read-only, no permission); nothing was left behind."""


def _size(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} MB ({n:,} bytes)"
    return f"{n / 1e3:.1f} kB ({n:,} bytes)" if n >= 10_000 else f"{n:,} bytes"


def _os_errno(err: BaseException) -> int | None:
    """The OS error number of ``err``: an ``OSError``'s, or one a Rust extension (safetensors,
    tokenizers) spelled into its message as ``(os error 28)``."""
    if isinstance(err, OSError):
        return err.errno
    found = re.search(r"\(os error (\d+)\)", str(err))
    return int(found.group(1)) if found else None


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def _tree_bytes(folder: Path) -> int:
    try:
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    except OSError:
        return 0


@contextlib.contextmanager
def _writing(folder: Path, need_bytes: int | None = None, progress: list[int] | None = None) -> Iterator[None]:
    """Turn a failed write under ``folder`` into a ``CacheWriteError`` naming the folder and the bytes it needed.

    ``progress`` (a one-element list): how many bytes had been written when the write failed.
    """
    try:
        yield
    except CacheWriteError:
        raise
    except Exception as err:
        code = _os_errno(err)
        filename = getattr(err, "filename", None)
        within = filename is None or str(folder.parent) in str(Path(filename).absolute())
        if code not in _WRITE_ERRNOS or not within:
            raise
        reason = _WRITE_ERRNOS[code]
        needed = f"it needed {_size(need_bytes)}" if need_bytes else "the size it needed is unknown"
        written = progress[0] if progress else 0
        if written:
            needed += f"; {_size(written)} had been written when it failed"
        free = _free_bytes(folder)
        where = f"{_size(free)} free there" if free is not None and code in (errno.ENOSPC, errno.EDQUOT) else ""
        fix = ("free space there or set the cache elsewhere" if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
               else "make it writable or set the cache elsewhere")
        message = f"cannot write {folder}: {reason} ({needed}{'; ' + where if where else ''}). Nothing was kept; {fix}"
        raise CacheWriteError(code, message) from err


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    with _writing(path, len(text.encode())):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes it private
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def atomic_file(path: Path, need_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for any writer (``savefig``, ``to_csv``); renamed on success.

    The temporary name keeps ``path``'s suffix (``.<name>.<random>.tmp<suffix>``), so writers that
    pick the format from it still work. On an error nothing is left; a full or read-only disk raises
    ``CacheWriteError`` naming ``path``.
    """
    path = Path(path)
    with _writing(path, need_bytes):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes it private
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _fsync_tree(folder: Path) -> None:
    """Flush every file of ``folder`` and the folder itself to disk, so a rename publishes whole files."""
    for path in [*folder.rglob("*"), folder]:
        if path.is_symlink():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _recover(path: Path) -> None:
    """Undo what a run killed while writing ``path`` left behind (caller holds ``path``'s lock).

    A run killed between the two renames of a replacement leaves only ``.<name>.old``: the previous
    complete version, which is put back. Temporary folders ``.<name>.*.tmp`` of killed runs are removed.
    """
    old = path.with_name(f".{path.name}.old")
    if old.exists() and not path.exists():
        os.replace(old, path)
    elif old.exists():
        shutil.rmtree(old, ignore_errors=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: Path, overwrite: bool = True, need_bytes: int | None = None,
               lock_timeout: float | None = None) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``path`` only if the block finishes.

    The block runs under ``path``'s lock (``frankenllama.locks``), so concurrent writers of one
    folder take turns. On any exception, or a kill at any instant, ``path`` is left as it was: the
    files are flushed to disk before the folder is renamed into place, a killed run's temporary
    folder is removed by the next writer, and a replacement killed between its two renames is rolled
    back. A write that fails for lack of space or permission raises ``CacheWriteError`` naming
    ``path`` and ``need_bytes`` (when the caller knows it; checked against the free space first).
    """
    path = Path(path)
    progress = [0]
    with _writing(path, need_bytes, progress), entry_lock(path, lock_timeout):
        _recover(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True or choose another folder")
        free = _free_bytes(path.parent)
        if need_bytes is not None and free is not None and need_bytes > free:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; the result should read like any other folder
            yield tmp
            _fsync_tree(tmp)
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
            _fsync_tree_parent(path)
        except BaseException:
            progress[0] = _tree_bytes(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _fsync_tree_parent(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# Cached results: verified reads, one writer per key
# --------------------------------------------------------------------------------------------------


def cache_path(stage: str, config: Any, root: Path | None = None, code: tuple[str, ...] = ()) -> Path:
    """The folder that holds (or will hold) ``stage``'s result for ``config`` computed by ``code``.

    ``root``: the cache folder; ``None`` reads ``frankenllama.paths.CACHE_DIR`` at call time (tests
    point that at a temporary folder).
    """
    return (paths.CACHE_DIR if root is None else root) / stage / config_key(stage, config, code)


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:  # an object array (a pickle) is refused, never run
        return {k: data[k] for k in data.files}


def _read_entry(folder: Path, payload: str, load: Callable[[Path], Any], version: str | None) -> Any:
    """The verified payload of cache entry ``folder``; ``CorruptEntryError`` if it fails a check or a load."""
    check_entry(folder, payload, version)
    try:
        return load(folder / payload)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise CorruptEntryError(f"{folder / payload} cannot be read ({type(err).__name__}: {err})") from None


def _read_verified(folder: Path, payload: str, load: Callable[[Path], Any], version: str | None) -> tuple[bool, Any]:
    """``(True, result)`` of the entry in ``folder`` if it passes its checks, else ``(False, None)``; no lock, no write."""
    if (folder / META_FILE).exists():
        with contextlib.suppress(CorruptEntryError):
            return True, _read_entry(folder, payload, load, version)
    return False, None


def _cached(stage: str, config: Any, compute: Callable[[], Any], seed: int | None, root: Path,
            code: tuple[str, ...], payload: str, load: Callable[[Path], Any],
            dump: Callable[[Any, Path], None], size: Callable[[Any], int], lock_timeout: float | None) -> Any:
    """The read-verify / lock / re-check / quarantine / compute / atomic-write cycle of both caches."""
    root = paths.CACHE_DIR if root is None else Path(root)
    folder = cache_path(stage, config, root, code)
    version = code_version(tuple(code)) if code else None
    found, result = _read_verified(folder, payload, load, version)  # checked again under the lock: a writer may be mid-swap
    if found:
        return result
    with contextlib.ExitStack() as held:
        with _writing(folder):  # creating the lock file is the first write
            held.enter_context(entry_lock(folder, lock_timeout))
        if folder.exists():
            try:
                return _read_entry(folder, payload, load, version)  # another process wrote it while we waited
            except CorruptEntryError as err:
                quarantine(folder, stage, root, str(err))
        result = compute()
        with atomic_dir(folder, need_bytes=size(result)) as tmp:
            dump(result, tmp / payload)
            meta = {**provenance(config, seed, code), "files": file_records(tmp, [payload])}
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return result


def cached_json(
    stage: str,
    config: Any,
    compute: Callable[[], Any],
    seed: int | None = None,
    root: Path | None = None,
    code: tuple[str, ...] = (),
    lock_timeout: float | None = None,
) -> Any:
    """Return the cached JSON result of ``stage`` for ``config``, computing and storing it if absent.

    The entry holds ``result.json`` and ``meta.json`` (provenance and the payload's SHA-256); it
    appears atomically, and a read checks it first: an entry that fails is quarantined (a warning
    names it) and recomputed. One process computes a key at a time; others wait for it (at most
    ``lock_timeout`` seconds, see ``frankenllama.locks``) and read its result. ``code``: the
    modules whose code computes the result (see ``code_version``); part of the key.
    """
    def dump(result: Any, path: Path) -> None:
        path.write_text(json.dumps(result, indent=2) + "\n")

    return _cached(stage, config, lambda: to_jsonable(compute()), seed, root, code, "result.json", _load_json,
                   dump, lambda r: len(json.dumps(r, indent=2)) + 4096, lock_timeout)


def stored_arrays(stage: str, config: Any, root: Path | None = None, code: tuple[str, ...] = ()) -> dict[str, np.ndarray] | None:
    """What ``cached_arrays`` holds for ``stage`` and ``config``, or ``None``: computes, locks and writes nothing.

    For a caller that can use a related entry (a longer run of a nested search) in place of its own;
    an entry that fails its checks reads as absent (``cached_arrays`` quarantines it when asked).
    """
    folder = cache_path(stage, config, paths.CACHE_DIR if root is None else Path(root), code)
    return _read_verified(folder, "arrays.npz", _load_arrays, code_version(tuple(code)) if code else None)[1]


def cached_arrays(
    stage: str,
    config: Any,
    compute: Callable[[], dict[str, np.ndarray]],
    seed: int | None = None,
    root: Path | None = None,
    code: tuple[str, ...] = (),
    lock_timeout: float | None = None,
) -> dict[str, np.ndarray]:
    """Like ``cached_json`` for a dict of NumPy arrays, stored as ``arrays.npz`` (read without pickle)."""
    def dump(arrays: dict[str, np.ndarray], path: Path) -> None:
        np.savez(path, **arrays)

    def size(arrays: dict[str, np.ndarray]) -> int:
        return sum(np.asarray(a).nbytes + 512 for a in arrays.values()) + 4096

    return _cached(stage, config, compute, seed, root, code, "arrays.npz", _load_arrays, dump, size, lock_timeout)
