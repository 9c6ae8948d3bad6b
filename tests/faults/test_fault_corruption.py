"""A damaged stored entry of each kind is caught, quarantined with a warning, and recomputed to the same numbers."""

from __future__ import annotations

import json

import pytest

from faultkit import damage
from frankenllama.integrity import CacheIntegrityWarning, CorruptEntryError, verify_folder
from scenarios import cache_root, model_folder, model_folder_path, nll_json, similarity

# kind -> (scenario, the payload file a fault damages, the file holding its checksums)
KINDS = {
    "arrays": (similarity, "similarity", "arrays.npz", "meta.json"),
    "json": (nll_json, "nll", "result.json", "meta.json"),
    "model-folder": (model_folder, "variants", "model.safetensors", "checksums.json"),
}
DAMAGE = ("truncate", "zero", "bitflip", "missing")


def _entry(workdir, stage):
    (entry,) = [p for p in (cache_root(workdir) / stage).iterdir() if not p.name.startswith(".")]
    return entry


def _rerun_quarantines(run, workdir, entry, baseline):
    with pytest.warns(CacheIntegrityWarning, match=entry.name) as record:
        assert run(workdir) == baseline
    assert len(record) == 1
    (moved,) = (cache_root(workdir) / ".quarantine").iterdir()
    assert moved.name.startswith(f"{entry.parent.name}-{entry.name}-")
    return moved


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_damaged_payload_is_quarantined_and_recomputed(kind, how, tmp_path):
    run, stage, payload, _ = KINDS[kind]
    baseline = run(tmp_path)
    entry = _entry(tmp_path, stage)
    damage(entry / payload, how)
    moved = _rerun_quarantines(run, tmp_path, entry, baseline)
    assert (moved / payload).exists() == (how != "missing")  # the damaged copy is kept for inspection
    assert run(tmp_path) == baseline  # and the recomputed entry is read back without a warning


@pytest.mark.parametrize("how", ("garbage", "zero", "missing"))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_unreadable_checksum_record_is_quarantined(kind, how, tmp_path):
    run, stage, _, record = KINDS[kind]
    baseline = run(tmp_path)
    entry = _entry(tmp_path, stage)
    damage(entry / record, how)
    _rerun_quarantines(run, tmp_path, entry, baseline)


@pytest.mark.parametrize("kind", ("arrays", "json"))
def test_entry_of_another_code_version_or_without_checksums_is_quarantined(kind, tmp_path):
    run, stage, _, _ = KINDS[kind]
    baseline = run(tmp_path)
    entry = _entry(tmp_path, stage)
    meta = json.loads((entry / "meta.json").read_text())
    meta["code"]["version"] = "0000000000000000"
    (entry / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(CacheIntegrityWarning, match="code version 0000000000000000"):
        assert run(tmp_path) == baseline
    meta = json.loads((entry / "meta.json").read_text())
    del meta["files"]  # as the cache wrote it before checksums were recorded
    (entry / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(CacheIntegrityWarning, match="records no checksums"):
        assert run(tmp_path) == baseline


def test_verify_folder_names_the_damaged_file(tmp_path):
    model_folder(tmp_path)
    folder = model_folder_path(tmp_path)
    verify_folder(folder)
    damage(folder / "model.safetensors", "truncate")
    with pytest.raises(CorruptEntryError, match=r"model\.safetensors is truncated"):
        verify_folder(folder)
    damage(folder / "config.json", "bitflip")  # checked in name order: config.json comes first
    with pytest.raises(CorruptEntryError, match=r"config\.json fails its SHA-256"):
        verify_folder(folder)
