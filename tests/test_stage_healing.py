"""Notebook 03's stage on a pico llama saved to a temporary folder, with a temporary cache and variant store.

Values checked: the healed variants have L − k blocks and record the cut; the cached reference
perplexity equals ``frankenllama.eval.perplexity`` on the same eval blocks, and the unhealed perplexity
that of the pruned model; the recovery table is the gap formula; a second call reads every cache
(the reference and each healed variant) instead of recomputing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoConfig

import frankenllama.stages.healing as stage_module
from frankenllama import paths
from frankenllama.data import load_corpus, token_blocks
from frankenllama.healing import gap_recovered
from frankenllama.healing.report import nll_gap_interval
from frankenllama.models import load_model
from frankenllama.eval.paired import retained
from frankenllama.eval.perplexity import mean_nll, perplexity
from frankenllama.stages.common import DataConfig, shared_model
from frankenllama.stages.healing import HealingStageConfig, healing_stage
from frankenllama.surgery import drop_layers
from frankenllama.variants import META_FILE
from tiny_lm import pico_workbook

LAYERS = 4
CUT = [2]


@pytest.fixture
def workbook(tmp_path, monkeypatch):
    """A saved pico llama, a small text corpus, and the cache and variant store in ``tmp_path``."""
    model_dir, corpus, rng = pico_workbook(tmp_path, monkeypatch, LAYERS, 80)
    other = tmp_path / "other.txt"  # out of domain: other words, never trained or calibrated on
    other.write_text("\n\n".join(" ".join(rng.choice("we you they run sing over under new old".split()) for _ in range(30))
                                   for _ in range(80)))  # fmt: skip
    config = HealingStageConfig(model=str(model_dir), corpus=str(corpus), recipes=("linear-patch", "lora", "kd-lora"),
                                tokens=64, block_len=16, batch_size=2, eval_every=1, checkpoint_every=1, eval_blocks=2,
                                patch_tokens=32, kd_top_k=8, variant_prefix="test-healed",
                                ood_corpus=str(other))  # fmt: skip
    yield config
    shared_model.cache_clear()


def test_healing_stage_values_and_caches(workbook, monkeypatch):
    config = workbook
    result = healing_stage(config, CUT, "angular-block")

    assert result.layers == CUT and result.strategy == "angular-block"
    assert [r.config.recipe for r in result.results] == list(config.recipes)
    for r in result.results:
        assert r.out_dir == paths.VARIANTS_DIR / f"test-healed-{r.config.recipe}"
        assert AutoConfig.from_pretrained(r.out_dir).num_hidden_layers == LAYERS - len(CUT)
        meta = json.loads((r.out_dir / META_FILE).read_text())["meta"]
        assert meta["removed_layers"] == CUT and meta["strategy"] == "angular-block" and meta["base_model"] == config.model
    assert [r.tokens_seen for r in result.results] == [0, 64, 64]

    teacher, tokenizer = load_model(config.model)
    held_out = token_blocks(tokenizer, load_corpus(config.corpus, "eval"), 16, max_blocks=2)
    assert held_out.shape == (2, 16)
    ood = token_blocks(tokenizer, load_corpus(config.ood_corpus, "eval"), 16, max_blocks=2)
    assert ood.shape == (2, 16) and not torch.equal(ood, held_out)
    pruned = drop_layers(teacher, CUT)
    assert result.reference_ppl == pytest.approx(perplexity(teacher, held_out), rel=1e-9)
    assert result.unhealed_ppl == pytest.approx(perplexity(pruned, held_out), rel=1e-9)
    assert result.reference_ppl_ood == pytest.approx(perplexity(teacher, ood), rel=1e-9)
    assert result.unhealed_ppl_ood == pytest.approx(perplexity(pruned, ood), rel=1e-9)
    assert result.unhealed_ppl_ood != pytest.approx(result.unhealed_ppl)
    assert all(r.ppl_before == result.unhealed_ppl and r.ppl_before_ood == result.unhealed_ppl_ood for r in result.results)
    for r in result.results:  # the healed model's out-of-domain NLL, block by block, and the curve's last point
        healed = load_model(r.out_dir)[0]
        assert r.block_nll["after_ood"] == pytest.approx([mean_nll(healed, ood[i : i + 1]) for i in range(2)], rel=1e-5)
        assert r.ppl_after_ood == pytest.approx(perplexity(healed, ood), rel=1e-5)
        assert all("ppl_ood" in c for c in r.curve) and r.curve[-1]["ppl_ood"] == r.ppl_after_ood
    assert [len(r.curve) for r in result.results] == [1, 3, 3]  # lora and kd-lora: 0 and each of their 2 steps

    table = result.recovery
    assert list(table.recipe) == list(config.recipes)
    for domain, ref, before, after in (("in", result.reference_ppl, "ppl_before", "ppl_after"),
                                       ("out", result.reference_ppl_ood, "ppl_before_ood", "ppl_after_ood")):
        expected = [gap_recovered(getattr(r, before), getattr(r, after), ref) for r in result.results]
        assert table[f"gap recovered % ({domain})"].tolist() == pytest.approx(expected)
        expected = [gap_recovered(getattr(r, before), getattr(r, after), ref, log=True) for r in result.results]
        assert table[f"gap recovered NLL % ({domain})"].tolist() == pytest.approx(expected)
    lora = result.results[1]  # its interval: the paired bootstrap over the 2 blocks, by hand
    b, a, ref = (np.array(v) for v in (lora.block_nll["before"], lora.block_nll["after"], result.reference_nll["in"]))
    interval = (table.loc[1, "NLL low (in)"], table.loc[1, "NLL high (in)"])
    if (b - ref).mean() > 0:
        share = retained(b - a, b - ref, seed=config.seed)
        assert interval == pytest.approx((share.low, share.high))
    else:  # the random pico llama lost nothing by the cut: no gap, no interval
        assert np.isnan(interval).all()

    entries = [p for p in (paths.CACHE_DIR / "healing-reference").iterdir() if not p.name.startswith(".")]  # locks are hidden
    cached = json.loads((entries[0] / "result.json").read_text())
    assert len(entries) == 1 and cached == result.reference_nll and len(cached["in"]) == len(cached["out"]) == 2

    def refuse(*args, **kwargs):
        raise AssertionError("the reference perplexity must come from the cache")

    monkeypatch.setattr(stage_module, "eval_nll", refuse)
    again = healing_stage(config, CUT, "angular-block")
    assert again.reference_ppl == result.reference_ppl
    assert all(r.cached for r in again.results)
    assert [r.ppl_after for r in again.results] == [r.ppl_after for r in result.results]


def test_nll_gap_interval_by_hand():
    before, after, reference = [3.0, 3.2, 3.4, 3.1], [2.5, 2.9, 3.0, 2.8], [2.0, 2.2, 2.4, 2.1]
    low, high = nll_gap_interval(before, after, reference, n_boot=1000)
    # every block's gap is 1 nat, so the share is the resampled mean of (0.5, 0.3, 0.4, 0.3): 37.5 % in [30, 50]
    assert 30.0 <= low < 37.5 < high <= 50.0
    share = retained(np.subtract(before, after), np.subtract(before, reference), n_boot=1000)
    assert (low, high) == (share.low, share.high)
    assert np.isnan(nll_gap_interval(reference, after, before)).all()  # "before" better than the reference: no gap
    assert np.isnan(nll_gap_interval(before, after, None)).all() and np.isnan(nll_gap_interval(before, after[:2], reference)).all()


def test_healing_stage_refuses_a_bad_cut(workbook):
    with pytest.raises(ValueError, match="out of range"):
        healing_stage(workbook, [LAYERS], "angular-block")
    with pytest.raises(ValueError, match="the cut is empty"):
        healing_stage(workbook, [], "angular-block")
    assert not paths.VARIANTS_DIR.exists()


def test_healing_stage_config_is_validated_and_keeps_notebook_03_defaults():
    config = HealingStageConfig()
    assert (config.tokens, config.block_len, config.batch_size, config.eval_every, config.checkpoint_every,
            config.eval_blocks, config.patch_tokens, config.kd_top_k, config.seed) == (8192, 256, 4, 4, 4, 8, 8192, 64, 0)
    assert config.recipes == ("linear-patch", "lora", "kd-lora", "kd-full", "partial", "linear-patch+lora")
    assert config.data("train").n_blocks == 32 and config.data("calib").n_blocks == 32 and config.data("eval").n_blocks == 8
    assert config.data("ood") == DataConfig("olmo-passages", "eval", 256, 8)  # out of domain: eval split only
    with pytest.raises(ValueError, match="ood_corpus"):
        HealingStageConfig(ood_corpus=None).data("ood")
    with pytest.raises(KeyError, match="unknown healing recipe"):
        HealingStageConfig(recipes=("qlora",))
    with pytest.raises(TypeError, match="tuple of recipe names"):
        HealingStageConfig(recipes="lora")
    with pytest.raises(ValueError, match="tokens >= block_len"):
        HealingStageConfig(tokens=100)
    with pytest.raises(ValueError, match="variant name"):
        HealingStageConfig(variant_prefix="no spaces")
