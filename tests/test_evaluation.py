"""The final comparison's tables, on a synthetic stage result (no model); its figures are in test_figures."""

from __future__ import annotations

import numpy as np
import pytest

from frankenllama.figures.evaluation import _pareto_front
from frankenllama.stages.evaluation import BASELINE, EvaluationConfig, accuracy_table, comparison_table


def task(acc: float, acc_norm: float) -> dict:
    return {"task": "t", "n": 10, "acc": acc, "acc_norm": acc_norm, "acc_stderr": 0.1, "acc_norm_stderr": 0.1, "chance": 0.25}


def speed_row(model: str, layers: int, params: float, tps: float) -> dict:
    return {"model": model, "layers": layers, "params": params, "bytes_bf16": 2 * params, "ideal_speedup": 30 / layers,
            "decode_tps_b1": tps, "decode_tps_b1_speedup": tps / 10.0, "prefill_tps_b1_speedup": tps / 10.0}


STAGE = {
    "results": {
        BASELINE: {"tasks": {"arc_easy": task(0.6, 0.5), "piqa": task(0.7, 0.7)}, "perplexity": 20.0, "kl": 0.0, "top1_agreement": 1.0, "layers": 30},
        "pruned": {"tasks": {"arc_easy": task(0.3, 0.25), "piqa": task(0.7, 0.35)}, "perplexity": 40.0, "kl": 0.5, "top1_agreement": 0.6, "layers": 24},
    },
    "speed": [speed_row(BASELINE, 30, 135e6, 10.0), speed_row("pruned", 24, 113e6, 12.0)],
}


def test_comparison_table_by_hand():
    table = comparison_table(STAGE, "acc_norm")
    assert table.loc[BASELINE, "average"] == pytest.approx(60.0)
    assert table.loc["pruned", "average"] == pytest.approx(30.0)
    assert table.loc["pruned", "retained_%"] == pytest.approx(50.0)
    assert table.loc["pruned", "decode_b1_x"] == pytest.approx(1.2)
    assert table.loc["pruned", "ideal_x"] == pytest.approx(1.25)
    assert table.loc["pruned", "decode_ms_b1"] == pytest.approx(1000 / 12)
    assert comparison_table(STAGE, "acc").loc["pruned", "piqa"] == pytest.approx(70.0)
    with pytest.raises(ValueError, match="metric"):
        comparison_table(STAGE, "f1")


def test_accuracy_table_by_hand():
    table = accuracy_table(STAGE, "acc")
    assert list(table.index) == [BASELINE, "pruned"] and list(table.columns) == ["arc_easy", "piqa", "average"]
    assert table.loc[BASELINE, "average"] == pytest.approx(65.0)
    assert table.loc["pruned", "arc_easy"] == pytest.approx(30.0)


def test_comparison_table_columns():
    table = comparison_table(STAGE)
    assert table.index.name == "model" and list(table.index) == [BASELINE, "pruned"]
    assert list(table.columns) == [
        "arc_easy", "piqa", "average", "retained_%", "layers", "ppl_in_domain", "ppl_out_of_domain", "kl", "top1_%", "params_M",
        "size_bf16_MB", "decode_b1_x", "prefill_b1_x", "ideal_x", "decode_ms_b1",  # speed columns in the speed table's order
    ]  # fmt: skip
    assert table.loc["pruned", "top1_%"] == pytest.approx(60.0)
    assert table.loc["pruned", "size_bf16_MB"] == pytest.approx(2 * 113e6 / 2**20)


def test_pareto_front():
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 0.5, 2.0, 1.5])
    assert _pareto_front(x, y).tolist() == [0, 2]


def test_config_validation():
    with pytest.raises(ValueError):
        EvaluationConfig(ppl_blocks=0)
    with pytest.raises(ValueError):
        EvaluationConfig(max_variants=-1)
