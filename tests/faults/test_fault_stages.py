"""Faults in the real stages beyond the seeded kill points of ``test_fault_kill``.

Two processes running one stage at once (``make figures`` started twice in one checkout); a heal
killed in the middle of training, which must resume from its last checkpoint to the bit-identical
weights; a heal killed after saving its result but before removing its checkpoints; a damaged
pruned variant, which the pruning stage must save again instead of keeping.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import conftest
import stage_scenarios
from faultkit import assert_nothing_partial, damage, leftovers, shared_server
from frankenllama import paths
from frankenllama.healing import HealConfig, heal
from frankenllama.healing import pipeline
from frankenllama.healing.checkpoint import INDEX_FILE, default_checkpoint_dir
from frankenllama.integrity import CacheIntegrityWarning
from frankenllama.stages.pruning import save_pruned_variants
from frankenllama.surgery import drop_layers
from frankenllama.variants import intact, load_variant, variant_path
from scenarios import cache_root


@pytest.mark.parametrize("name,entries", [("similarity-stage", 1), ("ablation-scan", 3)])
def test_two_processes_running_one_stage_at_once_compute_each_entry_once(tmp_path, name, entries):
    server = shared_server()
    alone = server.run(name, tmp_path / "alone")
    assert alone["codes"] == [0], alone
    reply = server.run(f"{name}-logged", tmp_path / "twice", copies=2)
    assert reply["codes"] == [0, 0], reply
    first, second = (out["result"] for out in reply["outputs"])
    assert first == second == alone["outputs"][0]["result"]
    writes = (tmp_path / "twice" / "writes.log").read_text().splitlines()
    configs = [w.split(" ", 1)[1] for w in writes]
    assert len(writes) == entries and len(set(configs)) == entries, writes  # each entry written by one process
    statuses = assert_nothing_partial(cache_root(tmp_path / "twice"))
    assert statuses == ["ok"] * entries
    assert leftovers(cache_root(tmp_path / "twice")) == []


def test_heal_killed_mid_training_resumes_from_its_checkpoint_bit_identically(tmp_path):
    server = shared_server()
    clean = server.run("heal", tmp_path / "clean", kill="count")
    assert clean["codes"] == [0], clean
    lines = clean["outputs"][0]["lines"]
    resumed = []
    for i, fraction in enumerate((0.45, 0.7, 0.9)):
        workdir = tmp_path / f"kill{i}"
        killed = server.run("heal", workdir, kill="line", n=int(fraction * lines))
        assert killed["signals"] == [9], killed
        assert not (cache_root(workdir) / "variants" / "healed-pico").exists()  # no half-saved result
        assert (cache_root(workdir) / "variants" / ".healed-pico.checkpoints" / INDEX_FILE).is_file()
        rerun = server.run("heal", workdir)
        assert rerun["codes"] == [0], rerun
        assert rerun["outputs"][0]["result"] == clean["outputs"][0]["result"], f"killed at {fraction:.0%} of the run"
        resumed.append(json.loads((workdir / "heal-runs.jsonl").read_text().splitlines()[-1])["resumed_from_step"])
        assert leftovers(cache_root(workdir)) == []
        assert_nothing_partial(cache_root(workdir))
    assert all(step is not None and step >= 1 for step in resumed), resumed
    assert resumed == sorted(resumed) and resumed[0] < resumed[-1]  # later kills resume from later steps


@pytest.fixture
def healing(tmp_path, monkeypatch):
    """``heal``'s arguments for a 4-step kd-free LoRA run on a pico llama, checkpoints every step."""
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    teacher = conftest.tiny_llama(num_layers=4, seed=0)
    g = torch.Generator().manual_seed(1)
    config = HealConfig(recipe="lora", tokens=4 * 2 * 16, batch_size=2, checkpoint_every=1)
    args = (drop_layers(teacher, [2]), conftest.tiny_tokenizer(), config)
    return args, {"train_blocks": torch.randint(0, 128, (8, 16), generator=g), "progress": False,
                  "out_dir": tmp_path / "healed"}


def test_heal_killed_after_saving_before_removing_checkpoints_cleans_up_on_rerun(healing, monkeypatch):
    args, kwargs = healing
    checkpoints = default_checkpoint_dir(kwargs["out_dir"])
    original = pipeline.discard_checkpoints

    def killed(folder, fingerprint=None):
        raise KeyboardInterrupt("killed after the result was saved")

    monkeypatch.setattr(pipeline, "discard_checkpoints", killed)
    with pytest.raises(KeyboardInterrupt):
        heal(*args, **kwargs)
    assert intact(kwargs["out_dir"]) and (checkpoints / INDEX_FILE).is_file()
    trash = checkpoints.with_name(f"{checkpoints.name}.999.tmp")  # what a kill during the deletion leaves
    shutil.copytree(checkpoints, trash)
    monkeypatch.setattr(pipeline, "discard_checkpoints", original)
    result = heal(*args, **kwargs)
    assert result.cached and not checkpoints.exists()  # the obsolete checkpoints went with the cache hit
    assert leftovers(kwargs["out_dir"].parent) == []


def test_heal_cache_hit_keeps_a_checkpoint_of_another_run(healing):
    args, kwargs = healing
    heal(*args, **kwargs)
    checkpoints = default_checkpoint_dir(kwargs["out_dir"])
    checkpoints.mkdir()
    (checkpoints / INDEX_FILE).write_text(json.dumps({"fingerprint": "another-run"}))
    assert heal(*args, **kwargs).cached
    assert (checkpoints / INDEX_FILE).is_file()  # that run may still resume from it


def test_a_damaged_pruned_variant_is_saved_again_by_the_pruning_stage(tmp_path, monkeypatch):
    workdir = tmp_path / "w"
    stage_scenarios.prepare(workdir)
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(paths, "VARIANTS_DIR", tmp_path / "cache" / "variants")
    config = stage_scenarios._pruning_config(workdir, "ablation-nll")
    (name,) = save_pruned_variants(config, ks=(1,), also=())
    before = stage_scenarios._digest(load_variant(name, dtype="float32", device="cpu")[0])
    damage(variant_path(name) / "model.safetensors", "bitflip")
    with pytest.warns(CacheIntegrityWarning, match="model.safetensors fails its SHA-256"):
        assert save_pruned_variants(config, ks=(1,), also=()) == [name]
    assert intact(variant_path(name))
    assert stage_scenarios._digest(load_variant(name, dtype="float32", device="cpu")[0]) == before
    assert len(list((tmp_path / "cache" / ".quarantine").iterdir())) == 1  # the damaged copy, kept aside
