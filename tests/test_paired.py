"""Paired statistics (frankenllama.eval.paired) against hand-worked cases and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from frankenllama.eval.paired import mcnemar, paired_difference, retained


def test_difference_of_means_and_constant_difference_has_a_point_interval():
    x, y = [3.0, 1.0, 4.0, 1.5], [2.0, 0.0, 3.0, 0.5]  # every item differs by exactly 1
    r = paired_difference(x, y, n_boot=500)
    assert (r.mean_x, r.mean_y, r.diff) == pytest.approx((2.375, 1.375, 1.0))
    assert (r.low, r.high) == pytest.approx((1.0, 1.0))  # resampling a constant gives the constant
    assert r.significant and r.half_width == pytest.approx(0.0)


def test_grouped_difference_is_the_macro_mean_with_stratified_resampling():
    # task A: x right, y wrong on both items (diff 1); task B: four items, no difference
    x = [1, 1, 0, 0, 0, 0]
    y = [0, 0, 0, 0, 0, 0]
    groups = ["A", "A", "B", "B", "B", "B"]
    r = paired_difference(x, y, groups=groups, n_boot=300)
    assert r.diff == pytest.approx(0.5)  # (1 + 0) / 2, not the micro mean 2/6
    assert (r.low, r.high) == pytest.approx((0.5, 0.5))  # each stratum keeps its size and its constant diff
    ungrouped = paired_difference(x, y, n_boot=300)
    assert ungrouped.diff == pytest.approx(2 / 6)


def test_bootstrap_interval_matches_scipy_percentile_bootstrap():
    rng = np.random.default_rng(1)
    y = rng.normal(0, 1, 300)
    x = y + rng.normal(0.1, 0.5, 300)
    ours = paired_difference(x, y, n_boot=20000, seed=3)
    ref = stats.bootstrap((x - y,), np.mean, n_resamples=20000, method="percentile", rng=np.random.default_rng(4))
    ci = ref.confidence_interval
    width = ci.high - ci.low
    assert ours.low == pytest.approx(ci.low, abs=0.03 * width)
    assert ours.high == pytest.approx(ci.high, abs=0.03 * width)
    se = np.std(x - y, ddof=1) / np.sqrt(x.size)  # the normal approximation: half-width ≈ 1.96 se
    assert ours.half_width == pytest.approx(1.96 * se, rel=0.05)


def test_seed_makes_the_interval_reproducible():
    rng = np.random.default_rng(0)
    x, y = rng.random(50), rng.random(50)
    assert paired_difference(x, y, seed=7) == paired_difference(x, y, seed=7)
    assert paired_difference(x, y, seed=7) != paired_difference(x, y, seed=8)


def test_mcnemar_exact_p_value_by_hand_and_by_scipy():
    # 6 items only x gets right, 1 item only y gets right, 3 concordant
    x = [1, 1, 1, 1, 1, 1, 0, 1, 0, 1]
    y = [0, 0, 0, 0, 0, 0, 1, 1, 0, 1]
    r = mcnemar(x, y)
    assert (r.n, r.only_x, r.only_y) == (10, 6, 1)
    # P(K <= 1 | n=7, 1/2) = (1 + 7) / 128; two-sided doubles it
    assert r.p_value == pytest.approx(2 * 8 / 128)
    assert r.p_value == pytest.approx(stats.binomtest(1, 7, 0.5).pvalue)
    assert mcnemar(x, x).p_value == 1.0  # no discordant item
    with pytest.raises(ValueError, match="0/1"):
        mcnemar([0.5, 1], [1, 0])


def test_retained_is_a_ratio_of_means_with_a_paired_interval():
    x, y = [1, 0, 1, 0, 0.5], [1, 1, 1, 0.5, 0.5]  # means 0.5 and 0.8
    r = retained(x, y, n_boot=2000)
    assert r.percent == pytest.approx(62.5)
    assert r.low <= r.percent <= r.high
    same = retained(y, y, n_boot=200)
    assert (same.percent, same.low, same.high) == pytest.approx((100.0, 100.0, 100.0))
    with pytest.raises(ValueError, match="positive"):
        retained([1, 0], [0, 0])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same items"):
        paired_difference([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="no items"):
        paired_difference([], [])
    with pytest.raises(ValueError, match="finite"):
        paired_difference([1, np.nan], [1, 2])
    with pytest.raises(ValueError, match="one label per item"):
        paired_difference([1, 2], [1, 2], groups=["a"])


def _stage(per_model: dict[str, dict[str, list[tuple[int, int, float]]]]) -> dict:
    """A stage result holding only per-item records: ``{model: {task: [(item, acc_norm, gold_bpb), ...]}}``."""
    results = {}
    for name, tasks in per_model.items():
        results[name] = {"tasks": {
            task: {"n": len(items), "items": [
                {"item": i, "acc": a, "acc_norm": a, "gold_bpb": b, "gold_prob": 0.5, "gold_prob_norm": 0.5}
                for i, a, b in items
            ]} for task, items in tasks.items()
        }}  # fmt: skip
    return {"results": results}


def test_paired_table_of_the_evaluation_stage_by_hand():
    from frankenllama.stages.evaluation import paired_table

    stage = _stage({
        "original": {"t1": [(0, 1, 1.0), (5, 1, 2.0)], "t2": [(3, 1, 1.0), (4, 0, 1.0)]},
        "pruned": {"t1": [(0, 0, 2.0), (5, 1, 3.0)], "t2": [(3, 1, 1.5), (4, 0, 1.5)]},
    })  # fmt: skip
    acc = paired_table(stage, "acc_norm", n_boot=500)
    # t1: 50 - 100 = -50 points, t2: 50 - 50 = 0 -> macro -25; retained (0.5 + 0.5) / (1 + 0.5) = 66.7 %
    assert acc.loc["pruned", "diff"] == pytest.approx(-25.0)
    assert acc.loc["pruned", "retained_%"] == pytest.approx(100 * 0.5 / 0.75)
    assert acc.loc["pruned", "p_value"] == pytest.approx(1.0)  # one discordant item: binomtest(0, 1) = 1
    assert acc.loc["original", "diff"] == 0.0 and not acc.loc["original", "significant"]
    bpb = paired_table(stage, "gold_bpb", n_boot=500)
    assert (bpb.loc["pruned", "diff"], bpb.loc["pruned", "low"], bpb.loc["pruned", "high"]) == pytest.approx((0.75, 0.75, 0.75))
    assert bpb.loc["pruned", "significant"] and "retained_%" not in bpb.columns
    stage["results"]["pruned"]["tasks"]["t1"]["items"][1]["item"] = 6  # scored on another item
    with pytest.raises(ValueError, match="other items"):
        paired_table(stage)
