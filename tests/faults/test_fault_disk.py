"""A full or read-only disk during a save: a clear error naming the folder and the bytes, nothing half-written.

Covered: the write patterns (``scenarios``) and the real ``save_checkpoint`` and ``save_variant``.

The faithful version mounts a small tmpfs (needs root; skipped otherwise); the file-size limit
(``RLIMIT_FSIZE``, no privileges needed) makes the kernel refuse a write mid-file the same way.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess

import numpy as np
import pytest
import torch

import conftest
from frankenllama.cache import CacheWriteError, cached_arrays, cached_json
from frankenllama.healing.checkpoint import INDEX_FILE, load_checkpoint, save_checkpoint
from frankenllama.integrity import verify_folder
from frankenllama.variants import save_variant
from scenarios import _model, checkpoint, save_folder

MODEL_BYTES = r"1\d\d\.\d kB \(1\d\d,\d\d\d bytes\)"  # the pico model's weights, about 144 kB


def _mount(path, options):
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 kB tmpfs: smaller than the pico model's weights."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or _mount(disk, "size=64k").returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def _everything(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _source(tmp_path):
    """A source model folder on the normal disk, with its manifest, to check it stays untouched."""
    folder = save_folder(tmp_path / "source", _model(3, 1), conftest.tiny_tokenizer(), {"layers": 3})
    return folder, verify_folder(folder)


@pytest.mark.parametrize("preflight", [True, False], ids=["size-known", "fails-mid-write"])
def test_variant_save_on_a_full_disk(small_disk, tmp_path, preflight):
    source, manifest = _source(tmp_path)
    target = small_disk / "variants" / "pico-3"
    with pytest.raises(CacheWriteError, match=rf"cannot write {target}: no space left on the device") as info:
        save_folder(target, _model(3, 1), conftest.tiny_tokenizer(), {"layers": 3}, preflight=preflight)
    message = str(info.value)
    assert "Nothing was kept" in message and "free there" in message
    if preflight:
        assert re.search(rf"it needed {MODEL_BYTES}", message), message
    else:
        assert "had been written when it failed" in message
    assert _everything(small_disk) == ["variants", "variants/.pico-3.lock"]  # no partial folder, no temporary
    assert verify_folder(source) == manifest  # the source model is untouched


def test_checkpoint_save_on_a_full_disk(small_disk):
    with pytest.raises(CacheWriteError, match=r"cannot write .*/step-2: no space left on the device"):
        checkpoint(small_disk)  # writes small_disk/cache/checkpoints/step-2
    assert _everything(small_disk) == ["cache", "cache/checkpoints", "cache/checkpoints/.step-2.lock"]


def test_cached_results_on_a_full_disk(small_disk):
    big = {"x": np.zeros(20_000)}  # 160 kB: refused before writing
    with pytest.raises(CacheWriteError, match=r"cannot write .*: no space left .*it needed 16\d\.\d kB"):
        cached_arrays("scores", {"k": 1}, lambda: big, root=small_disk)
    (small_disk / "filler").write_bytes(b"\0" * (64 * 1024 - 4096))  # leave one page
    with pytest.raises(CacheWriteError, match=r"cannot write .*nll/.*: no space left"):
        cached_json("nll", {"k": 1}, lambda: {"values": list(range(5000))}, root=small_disk)
    left = [p for p in _everything(small_disk) if not p.endswith(".lock") and p not in ("filler", "nll", "scores")]
    assert left == []


def test_read_only_cache(small_disk):
    assert cached_json("nll", {"k": 1}, lambda: [1.5], root=small_disk) == [1.5]
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert cached_json("nll", {"k": 1}, lambda: 1 / 0, root=small_disk) == [1.5]  # reading needs no write
    with pytest.raises(CacheWriteError, match=r"cannot write .*nll/.*: the file system is read-only.*make it writable"):
        cached_json("nll", {"k": 2}, lambda: [2.5], root=small_disk)


def test_file_size_limit_mid_write(tmp_path):
    """No privileges needed: the kernel refuses the write past RLIMIT_FSIZE (EFBIG), mid-file."""
    target = tmp_path / "variants" / "pico-3"
    model, tokenizer = _model(3, 1), conftest.tiny_tokenizer()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(CacheWriteError, match=rf"cannot write {target}: file size limit exceeded"):
            save_folder(target, model, tokenizer, {"layers": 3}, preflight=False)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert _everything(tmp_path) == ["variants", "variants/.pico-3.lock"]


def test_real_healing_checkpoint_on_a_full_disk_keeps_the_previous_one(small_disk):
    """``healing.checkpoint.save_checkpoint`` itself: the error names the file and its bytes; step 1 stays loadable."""
    folder = small_disk / "variants" / ".healed.checkpoints"
    save_checkpoint(folder, "run", 1, {"w": torch.ones(4), "step_losses": [2.5]})
    weights = {k: v.clone() for k, v in _model(3, 1).state_dict().items()}  # about 144 kB: more than the disk
    with pytest.raises(CacheWriteError, match=rf"cannot write {folder}/tensors-00000002.safetensors: no space left "
                                              rf"on the device \(it needed {MODEL_BYTES}"):
        save_checkpoint(folder, "run", 2, {"w": weights, "step_losses": [2.5, 2.4]})
    state = load_checkpoint(folder, "run")
    assert state["step"] == 1 and state["step_losses"] == [2.5] and torch.equal(state["w"], torch.ones(4))
    assert sorted(p.name for p in folder.iterdir()) == [INDEX_FILE, "tensors-00000001.safetensors"]


def test_real_variant_save_on_a_full_disk(small_disk, tmp_path):
    """``variants.save_variant`` itself: refused before writing, naming the folder and the weights' size."""
    source, manifest = _source(tmp_path)
    with pytest.raises(CacheWriteError, match=rf"cannot write {small_disk}/variants/pico-3: no space left on the "
                                              rf"device \(it needed {MODEL_BYTES}"):
        save_variant("pico-3", _model(3, 1), conftest.tiny_tokenizer(), {"layers": 3}, root=small_disk / "variants")
    assert _everything(small_disk) == ["variants", "variants/.pico-3.lock"]
    assert verify_folder(source) == manifest
