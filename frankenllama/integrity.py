"""Checksums of everything the workbook stores, and what happens to an entry that fails them.

A cache entry (``data/cache/<stage>/<key>/``) records the SHA-256 and size of each payload file in
its ``meta.json`` (``"files"``); a model folder (a variant, a healed model) records them in
``checksums.json`` (``write_manifest``). A read checks them first (``check_entry``,
``verify_folder``), so a truncated copy, a zero-length file, a flipped bit, a missing file, an
unreadable ``meta.json`` or an entry of an older code version is caught before it is used. A
failed entry is moved aside, whole, to ``data/cache/.quarantine/<stage>-<key>-<time>/``
(``quarantine``) with a one-line warning naming both folders, and the caller recomputes it.

Nothing here unpickles: payloads are JSON, ``.npz`` read with ``allow_pickle=False`` and
safetensors; a model folder holding a pickle-format weights file (``.bin``, ``.pt``, ``.pkl``, …) is
refused, since loading one can run arbitrary code.

``python -m frankenllama cache verify [--root DIR] [--fix]`` checks the whole cache
(``verify_cache``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frankenllama.locks import is_locked
from frankenllama.paths import CACHE_DIR, resolve_user_path

MANIFEST_FILE = "checksums.json"  # in a model folder: {"algorithm": "sha256", "files": {name: record}}
META_FILE = "meta.json"  # in a cache entry: provenance + {"files": {name: record}}
QUARANTINE_DIR = ".quarantine"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class CorruptEntryError(ValueError):
    """A stored entry whose files do not match the checksums recorded when it was written."""


class CacheIntegrityWarning(UserWarning):
    """A cache entry failed its check and was moved to the quarantine folder."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_records(folder: Path, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{relative name: {"sha256", "bytes"}}`` for ``names`` in ``folder`` (default: every file below it)."""
    if names is None:
        names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)
    return {name: {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size} for name in names}


def check_records(folder: Path, records: dict[str, Any]) -> None:
    """Raise ``CorruptEntryError`` naming the first file of ``folder`` that differs from its record."""
    for name, record in sorted(records.items()):
        path = folder / name
        if not path.is_file():
            raise CorruptEntryError(f"{path} is missing")
        size = path.stat().st_size
        if size != record["bytes"]:
            what = "zero-length" if size == 0 else f"truncated or grown: {size} bytes"
            raise CorruptEntryError(f"{path} is {what}, expected {record['bytes']} bytes")
        if sha256_file(path) != record["sha256"]:
            raise CorruptEntryError(f"{path} fails its SHA-256 checksum (changed after it was written)")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorruptEntryError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptEntryError(f"{path} is unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise CorruptEntryError(f"{path} is not a JSON object")
    return data


def check_entry(folder: Path, payload: str | None = None, code_version: str | None = None) -> dict[str, Any]:
    """Check a cache entry against its ``meta.json``; return the meta or raise ``CorruptEntryError``.

    ``payload``: the file the reader will load (must be recorded); ``code_version``: the version the
    reader's code has (``frankenllama.cache.code_version``); an entry recording another one is refused.
    """
    meta = _read_json(folder / META_FILE)
    records = meta.get("files")
    if not isinstance(records, dict) or not records:
        raise CorruptEntryError(f"{folder} records no checksums (written before frankenllama recorded them)")
    if payload is not None and payload not in records:
        raise CorruptEntryError(f"{folder / META_FILE} records no checksum for {payload}")
    if code_version is not None:
        written = (meta.get("code") or {}).get("version")
        if written != code_version:
            raise CorruptEntryError(f"{folder} was written by code version {written}, this code is {code_version}")
    check_records(folder, records)
    return meta


def write_manifest(folder: Path) -> Path:
    """Record the SHA-256 and size of every file of model folder ``folder`` in ``checksums.json``.

    Call it on the temporary folder inside ``atomic_dir``, after the last file is written, so the
    manifest appears with the folder. Refuses a folder holding pickle-format weights.
    """
    folder = Path(folder)
    pickles = [p.name for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise ValueError(f"{folder} holds pickle-format files {pickles}; save tensors as safetensors")
    record = {"algorithm": "sha256", "files": file_records(folder)}
    tmp = folder / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, folder / MANIFEST_FILE)
    return folder / MANIFEST_FILE


def verify_folder(folder: Path) -> dict[str, Any]:
    """Check model folder ``folder`` against its ``checksums.json``; return the manifest or raise.

    Raises ``CorruptEntryError`` naming the folder and the file for a missing manifest or file, a
    wrong size or checksum, and any pickle-format file (never loaded, whoever put it there).
    """
    folder = Path(folder)
    pickles = sorted(p.name for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CorruptEntryError(f"{folder} holds pickle-format files {pickles}, which frankenllama never loads")
    manifest = _read_json(folder / MANIFEST_FILE)
    if manifest.get("algorithm") != "sha256" or not isinstance(manifest.get("files"), dict):
        raise CorruptEntryError(f"{folder / MANIFEST_FILE} is not a sha256 manifest")
    check_records(folder, manifest["files"])
    return manifest


def quarantine(folder: Path, stage: str, root: Path = CACHE_DIR, reason: str = "") -> Path:
    """Move ``folder`` (whole) to ``root/.quarantine/<stage>-<name>-<time>/`` and warn, naming both."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    dest = Path(root) / QUARANTINE_DIR / f"{stage}-{folder.name}-{stamp}"
    n = 1
    while dest.exists():
        n += 1
        dest = dest.with_name(f"{stage}-{folder.name}-{stamp}-{n}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(folder, dest)
    warnings.warn(f"{folder} failed its check ({reason or 'corrupt'}); moved to {dest}; it will be recomputed",
                  CacheIntegrityWarning, stacklevel=3)
    return dest


# --------------------------------------------------------------------------------------------------
# The whole cache: python -m frankenllama cache verify
# --------------------------------------------------------------------------------------------------


@dataclass
class EntryReport:
    path: Path
    status: str  # ok | corrupt | quarantined | legacy | unchecked | stale
    detail: str = ""


def _check_one(entry: Path) -> tuple[str, str]:
    try:
        if (entry / META_FILE).exists():
            check_entry(entry)
        elif (entry / MANIFEST_FILE).exists() or any(p.suffix in PICKLE_SUFFIXES for p in entry.rglob("*")):
            verify_folder(entry)
        else:
            return "unchecked", "no checksums recorded (a folder written before checksums, or not frankenllama's)"
    except CorruptEntryError as err:
        status = "legacy" if "records no checksums" in str(err) else "corrupt"
        return status, str(err)
    return "ok", ""


def _stale_owner(stage_dir: Path, name: str) -> Path | None:
    """The entry a dot-named leftover (``.<entry>.<random>.tmp`` or ``.<entry>.old``) belongs to, if any."""
    if name.endswith(".old"):
        return stage_dir / name[1:-4]
    if name.endswith(".tmp"):
        return stage_dir / name[1:].rsplit(".", 2)[0]
    return None


def verify_cache(root: Path = CACHE_DIR, fix: bool = False) -> list[EntryReport]:
    """Check every entry ``root/<stage>/<entry>/`` (cache entries and model folders).

    With ``fix``: corrupt and legacy entries go to the quarantine folder, and temporary folders left
    by killed runs (no live writer holds their entry's lock) are removed. Symlinked folders are
    checked but never moved.
    """
    reports: list[EntryReport] = []
    for stage_dir in sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")):
        for entry in sorted(stage_dir.iterdir()):
            if entry.name.startswith("."):
                owner = _stale_owner(stage_dir, entry.name)
                if owner is not None and not is_locked(owner):
                    if fix and not stage_dir.is_symlink():
                        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                    reports.append(EntryReport(entry, "removed" if fix and not stage_dir.is_symlink() else "stale",
                                               "left by a killed run"))
                continue
            if not entry.is_dir():
                continue
            status, detail = _check_one(entry)
            if fix and status in ("corrupt", "legacy") and not (entry.is_symlink() or stage_dir.is_symlink()):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", CacheIntegrityWarning)
                    dest = quarantine(entry, stage_dir.name, root, detail)
                status, detail = "quarantined", f"{detail}; moved to {dest}"
            reports.append(EntryReport(entry, status, detail))
    return reports


def _run_verify(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if not root.is_dir():
        print(f"cache verify: no cache at {root} (nothing to check)", file=sys.stderr)
        return 0
    reports = verify_cache(root, fix=args.fix)
    for r in reports:
        line = f"{r.status:<12} {r.path.relative_to(root)}"
        print(f"{line}  {r.detail}" if r.detail and r.status != "ok" else line)
    counts = {s: sum(r.status == s for r in reports) for s in
              ("ok", "corrupt", "quarantined", "legacy", "unchecked", "stale", "removed")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n or s in ("ok", "corrupt"))
    print(f"cache verify: {len(reports)} {'entry' if len(reports) == 1 else 'entries'} in {root}: {summary}")
    if counts["corrupt"]:
        print("cache verify: run with --fix to move corrupt entries to .quarantine/ (they are recomputed on "
              "next use)", file=sys.stderr)
        return 1
    return 0


def add_cache_parser(sub: argparse._SubParsersAction) -> None:
    """``python -m frankenllama cache verify [--root DIR] [--fix]``."""
    from frankenllama.cli import HelpFormatter

    parser = sub.add_parser("cache", help="check the cache", description="Check the cache's checksums.")
    cache_sub = parser.add_subparsers(dest="cache_verb", metavar="ACTION")
    cache_sub.required = True
    verify = cache_sub.add_parser(
        "verify", help="check every entry's checksums",
        description="Check every cache entry and model folder against the checksums recorded when it was "
                    "written. Prints one line per entry (ok / corrupt / quarantined / legacy / unchecked / "
                    "stale) and a summary; exits 1 if a corrupt entry is left.",
        formatter_class=HelpFormatter,
    )
    verify.add_argument("--root", type=resolve_user_path, default=CACHE_DIR, help="the cache folder to check")
    verify.add_argument("--fix", action="store_true",
                        help="move corrupt and legacy entries to <root>/.quarantine/ and remove temporary "
                             "folders of killed runs")
    verify.set_defaults(run=_run_verify)
