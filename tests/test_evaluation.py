"""The final comparison's tables, on a synthetic stage result (no model); its figures are in test_figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from frankenllama.figures.evaluation import _pareto_front
from frankenllama.stages import evaluation as stage_module
from frankenllama.stages.evaluation import (BASELINE, EvaluationConfig, accuracy_table, comparison_table, evaluation_config,
                                            paired_sentences, sizing_check, unhealed_variant)
from frankenllama.stages.profiles import build


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
    with pytest.raises(ValueError, match="fidelity_blocks >= 0"):
        EvaluationConfig(fidelity_blocks=-1)
    assert EvaluationConfig(fidelity_blocks=0).fidelity_blocks == 0  # no fidelity (notebook 05)
    with pytest.raises(ValueError):
        EvaluationConfig(max_variants=-1)


def test_paired_sentences_call_a_difference_only_when_its_interval_excludes_zero():
    table = pd.DataFrame({"diff": [0.0, 0.2, -0.05, 3.0], "low": [0.0, 0.1, -0.2, 1.0], "high": [0.0, 0.3, 0.1, 5.0],
                          "significant": [False, True, False, True]},
                         index=pd.Index([BASELINE, "pruned", "healed", "odd"], name="model"))  # fmt: skip
    said = paired_sentences(table, "gold_bpb")
    assert len(said) == 3  # the baseline is not compared with itself
    assert said[0] == "pruned: gold_bpb +0.2 bits/byte [+0.1, +0.3], worse than original (the interval excludes 0)."
    assert "not distinguishable from original" in said[1] and "better" not in said[1]
    table["p_value"] = [1.0, 0.01, 0.5, 0.001]
    assert paired_sentences(table, "acc_norm")[2] == "odd: acc_norm +3 points [+1, +5], better than original (the interval excludes 0); McNemar p = 0.001."


def test_sizing_check_against_a_third_of_the_unhealed_loss():
    table = pd.DataFrame({"diff": [0.0, 0.3, 0.1], "half_width": [0.0, 0.08, 0.12]}, index=[BASELINE, "prune-k6-x", "healed-lora"])
    check = sizing_check(table, "prune-k6-x", "gold_bpb")
    assert check == pytest.approx({"metric": "gold_bpb", "half_width": 0.12, "loss": 0.3, "limit": 0.1, "ok": False})
    table.loc["healed-lora", "half_width"] = 0.09
    assert sizing_check(table, "prune-k6-x", "gold_bpb")["ok"]
    assert unhealed_variant({"meta": {BASELINE: {}, "healed-lora": {"kind": "healed"}, "prune-k6-x": {"best_at_k": True}}}) == "prune-k6-x"
    assert unhealed_variant({"meta": {BASELINE: {}}}) is None


def test_the_default_profile_compares_the_study_variants_with_more_items(monkeypatch):
    monkeypatch.setattr(stage_module, "best_selection", lambda pruning, k: ("angular-block", [13, 14, 15, 16, 17, 18][:k]))
    run = build("default")
    config = evaluation_config(run)
    # 50 items per task (the old default scored 20 for every variant); notebook 04's sizing_check is what must hold
    assert config.tasks.tasks == ("arc_easy", "piqa", "hellaswag") and config.tasks.limit >= 50
    assert len(config.variants) < len(list(build("thesis").healing.recipes)) + 1  # fewer variants than every recipe
    assert config.variants == ("prune-k6-angular-block", *(f"healed-{r}" for r in run.healing.recipes))
    assert config.ood_corpus == "olmo-passages"
    thesis = build("thesis")
    assert evaluation_config(thesis) is thesis.evaluation and thesis.evaluation.tasks.limit is None  # every item, every variant
    smoke = build("smoke")
    assert evaluation_config(smoke).variants is None and evaluation_config(smoke).variant_prefix == "smoke-"
    fixed = build("default", overrides={"evaluation.variants": ["healed-lora"]})
    assert evaluation_config(fixed).variants == ("healed-lora",)  # an explicit choice wins
