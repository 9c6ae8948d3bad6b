"""A crafted pickle payload in any stored file is refused without running it.

The payload is an object whose ``__reduce__`` creates a marker file when unpickled. It is planted
with checksums that match (an attacker who rewrites ``meta.json`` too), so what refuses it is the
loader itself, not the checksum.
"""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pytest
import torch

from frankenllama.integrity import CacheIntegrityWarning, CorruptEntryError, verify_folder
from scenarios import cache_root, model_folder, model_folder_path, nll_json, similarity


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling this creates the marker file


def _plant(entry, payload_name, data: bytes):
    (entry / payload_name).write_bytes(data)
    meta = json.loads((entry / "meta.json").read_text())
    meta["files"][payload_name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (entry / "meta.json").write_text(json.dumps(meta))


def _entry(workdir, stage):
    (entry,) = [p for p in (cache_root(workdir) / stage).iterdir() if not p.name.startswith(".")]
    return entry


def test_payload_itself_runs_when_unpickled(tmp_path):
    """The control: this payload does execute under a plain unpickle."""
    pickle.loads(pickle.dumps(Payload(tmp_path / "ran")))
    assert (tmp_path / "ran").exists()


def test_npz_with_a_pickled_object_array_is_refused(tmp_path):
    baseline = similarity(tmp_path)
    entry = _entry(tmp_path, "similarity")
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.npz"
    np.savez(evil, cosine=np.array([Payload(marker)], dtype=object))
    _plant(entry, "arrays.npz", evil.read_bytes())
    with pytest.warns(CacheIntegrityWarning, match="Object arrays cannot be loaded"):
        assert similarity(tmp_path) == baseline
    assert not marker.exists()


def test_json_entry_holding_a_pickle_is_refused(tmp_path):
    baseline = nll_json(tmp_path)
    marker = tmp_path / "ran"
    _plant(_entry(tmp_path, "nll"), "result.json", pickle.dumps(Payload(marker)))
    with pytest.warns(CacheIntegrityWarning, match="cannot be read"):
        assert nll_json(tmp_path) == baseline
    assert not marker.exists()


def test_model_folder_holding_pickle_weights_is_refused(tmp_path):
    baseline = model_folder(tmp_path)
    folder = model_folder_path(tmp_path)
    marker = tmp_path / "ran"
    torch.save({"weight": Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(CorruptEntryError, match=r"pickle-format files \['pytorch_model.bin'\]"):
        verify_folder(folder)
    with pytest.warns(CacheIntegrityWarning, match="pickle-format"):
        assert model_folder(tmp_path) == baseline
    assert not marker.exists()


def test_weights_only_torch_load_refuses_the_payload(tmp_path):
    """What a checkpoint reader must use if it reads torch files at all (healing: ``weights_only=True``)."""
    marker = tmp_path / "ran"
    torch.save({"step": 3, "state": Payload(marker)}, tmp_path / "ckpt.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert not marker.exists()
