"""bench/gpu_check.py: its CPU side (the 8B-shaped model on meta, the plan of the GPU run) and its
message on a machine without CUDA (issue 13)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_builds_the_8b_shape_with_fewer_blocks(gpu_check, capsys) -> None:
    out = gpu_check.dry_run(layers=4, drop=2)
    c = gpu_check.config_8b()
    kv = c.num_key_value_heads * c.head_dim
    block = 2 * c.hidden_size**2 + 2 * c.hidden_size * kv + 3 * c.hidden_size * c.intermediate_size + 2 * c.hidden_size
    assert c.num_hidden_layers == 32 and c.hidden_size == 4096  # the published shape, untouched
    assert out["layers"] == 4
    assert out["params"] == 2 * c.vocab_size * c.hidden_size + c.hidden_size + 4 * block  # untied head + final norm
    assert out["params_pruned"] == out["params"] - 2 * block and out["ideal_speedup"] == pytest.approx(2.0)
    printed = capsys.readouterr().out
    for nb in gpu_check.notebooks():
        assert f"{nb.stem}.ipynb" in printed
    assert "thesis evaluation" in printed and gpu_check.pruned_blocks(32, 8) == list(range(23, 31))


def test_bad_shapes_are_refused(gpu_check) -> None:
    with pytest.raises(ValueError, match="--drop"):
        gpu_check.pruned_blocks(4, 4)
    with pytest.raises(ValueError, match="--layers"):
        gpu_check.config_8b(1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run for real")
def test_without_cuda_it_says_so_and_exits_0(gpu_check, capsys) -> None:
    assert gpu_check.main([]) == 0
    assert "cannot run here" in capsys.readouterr().out
    assert gpu_check.main(["--dry-run", "--layers", "3", "--drop", "1"]) == 0
