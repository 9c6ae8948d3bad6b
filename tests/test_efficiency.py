"""Efficiency: hand-counted sizes, the ideal speed-up, and that every timing path runs."""

from __future__ import annotations

import copy

import pytest
import torch

from frankenllama.eval.efficiency import (
    SpeedConfig,
    block_parameters,
    bytes_on_disk,
    compare_efficiency,
    compute_shape,
    count_parameters,
    ideal_speedup,
    measure_speed,
    peak_memory,
    time_decode,
)
from frankenllama.surgery import drop_layers
from tiny_lm import tiny_llama

# vocab 96, hidden 32, intermediate 64, 4 heads of 8, 2 KV heads, tied embeddings
EMBED = 96 * 32
PER_BLOCK = 32 * 32 * 2 + 32 * 16 * 2 + 3 * 32 * 64 + 2 * 32  # q,o + k,v + mlp + two RMSNorms = 9280
FINAL_NORM = 32


def test_parameter_count_by_hand():
    model = tiny_llama(num_layers=3)
    assert block_parameters(model) == 3 * PER_BLOCK
    assert count_parameters(model) == EMBED + 3 * PER_BLOCK + FINAL_NORM  # tied head counted once
    pruned = drop_layers(model, [0])
    assert count_parameters(model) - count_parameters(pruned) == PER_BLOCK


def test_bytes_on_disk():
    model = tiny_llama()
    n = count_parameters(model)
    assert bytes_on_disk(model, torch.float32) == 4 * n
    assert bytes_on_disk(model, torch.bfloat16) == 2 * n


def test_ideal_speedup():
    assert ideal_speedup(30, 24) == pytest.approx(1.25)
    with pytest.raises(ValueError):
        ideal_speedup(30, 0)


def test_peak_memory_is_at_least_the_weights():
    model = tiny_llama()
    assert peak_memory(model, batch=2, prompt_len=8) >= 4 * count_parameters(model)


@pytest.mark.parametrize("decode", ["generate", "loop"])
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_decode_timing_paths(decode, cache):
    model = tiny_llama()
    ids = torch.randint(3, 96, (2, 5))
    steps = time_decode(model, ids, new_tokens=4, decode=decode, cache=cache)
    assert len(steps) == 4 and all(s > 0 for s in steps)


def test_compare_efficiency_side_by_side():
    model = tiny_llama(num_layers=4)
    pruned = drop_layers(model, [1, 2])
    config = SpeedConfig(batch_sizes=(1, 2), prompt_len=8, new_tokens=3, repeats=2, warmup=0, threads=1)
    table = compare_efficiency({"full": model, "pruned": pruned}, config)
    assert list(table.index) == ["full", "pruned"]
    assert table.loc["pruned", "ideal_speedup"] == pytest.approx(2.0)
    assert table.loc["full", "decode_tps_b2_speedup"] == pytest.approx(1.0)
    assert (table[["prefill_tps_b1", "decode_tps_b1", "prefill_tps_b2", "decode_tps_b2"]] > 0).all().all()
    assert torch.get_num_threads() >= 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_sizes": ()}, "batch_sizes"),
        ({"repeats": 0}, "repeats"),
        ({"new_tokens": 1}, "new_tokens"),
        ({"decode": "fast"}, "decode"),
        ({"cache": "paged"}, "cache"),
        ({"threads": 0}, "threads"),
        ({"statistic": "mean"}, "statistic"),
    ],
)
def test_speed_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpeedConfig(**kwargs)


def test_measure_speed_restores_threads():
    before = torch.get_num_threads()
    measure_speed({"m": tiny_llama()}, SpeedConfig(batch_sizes=(1,), prompt_len=4, new_tokens=2, repeats=1, warmup=0, threads=1))
    assert torch.get_num_threads() == before


def test_models_of_one_compute_shape_are_timed_once():
    """A pruned model and its healed copy (other weights, same shapes) share one timing; another shape is timed."""
    model = tiny_llama(num_layers=4)
    pruned = drop_layers(model, [1, 2])
    healed = copy.deepcopy(pruned)
    with torch.no_grad():
        for p in healed.parameters():
            p.add_(0.01)
    assert compute_shape(healed) == compute_shape(pruned) != compute_shape(model)
    config = SpeedConfig(batch_sizes=(1,), prompt_len=4, new_tokens=2, repeats=1, warmup=0, threads=1)
    table = measure_speed({"full": model, "pruned": pruned, "healed": healed}, config)
    assert list(table["timed_as"]) == ["full", "pruned", "pruned"]
    assert table.loc["healed", "decode_tps_b1"] == table.loc["pruned", "decode_tps_b1"]
    assert table.loc["full", "decode_tps_b1"] != table.loc["pruned", "decode_tps_b1"]
