"""Notebook 03's stage on a pico llama saved to a temporary folder, with a temporary cache and variant store.

Values checked: the healed variants have L − k blocks and record the cut; the cached reference
perplexity equals ``frankenllama.eval.perplexity`` on the same eval blocks, and the unhealed perplexity
that of the pruned model; the recovery table is the gap formula; a second call reads every cache
(the reference and each healed variant) instead of recomputing.
"""

from __future__ import annotations

import json
import random

import pytest
from transformers import AutoConfig

import frankenllama.stages.healing as stage_module
from frankenllama import paths
from frankenllama.data import load_corpus, token_blocks
from frankenllama.healing import gap_recovered
from frankenllama.models import load_model
from frankenllama.eval.perplexity import perplexity
from frankenllama.stages.common import shared_model
from frankenllama.stages.healing import HealingStageConfig, healing_stage
from frankenllama.surgery import drop_layers
from frankenllama.variants import META_FILE
from tiny_lm import char_tokenizer, tiny_llama

LAYERS = 4
CUT = [2]


@pytest.fixture
def workbook(tmp_path, monkeypatch):
    """A saved pico llama, a small text corpus, and the cache and variant store in ``tmp_path``."""
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(paths, "VARIANTS_DIR", tmp_path / "cache" / "variants")
    model_dir = tmp_path / "pico"
    tiny_llama(num_layers=LAYERS).save_pretrained(model_dir)
    char_tokenizer().save_pretrained(model_dir)
    rng = random.Random(0)
    words = "the a of and to in is was on for by with as at from it that this an be".split()
    docs = [" ".join(rng.choice(words) for _ in range(30)) for _ in range(80)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(docs))
    config = HealingStageConfig(model=str(model_dir), corpus=str(corpus), recipes=("linear-patch", "lora", "kd-lora"),
                                tokens=64, block_len=16, batch_size=2, eval_every=1, checkpoint_every=1, eval_blocks=2,
                                patch_tokens=32, kd_top_k=8, variant_prefix="test-healed")  # fmt: skip
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
    assert result.reference_ppl == perplexity(teacher, held_out)
    assert result.unhealed_ppl == perplexity(drop_layers(teacher, CUT), held_out)
    assert all(r.ppl_before == result.unhealed_ppl for r in result.results)

    table = result.recovery
    assert list(table.recipe) == list(config.recipes)
    expected = [gap_recovered(r.ppl_before, r.ppl_after, result.reference_ppl) for r in result.results]
    assert table["gap recovered (%)"].tolist() == pytest.approx(expected)

    entries = [p for p in (paths.CACHE_DIR / "healing-reference").iterdir() if not p.name.startswith(".")]  # locks are hidden
    assert len(entries) == 1 and json.loads((entries[0] / "result.json").read_text()) == result.reference_ppl

    def refuse(*args, **kwargs):
        raise AssertionError("the reference perplexity must come from the cache")

    monkeypatch.setattr(stage_module, "perplexity", refuse)
    again = healing_stage(config, CUT, "angular-block")
    assert again.reference_ppl == result.reference_ppl
    assert all(r.cached for r in again.results)
    assert [r.ppl_after for r in again.results] == [r.ppl_after for r in result.results]


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
    with pytest.raises(KeyError, match="unknown healing recipe"):
        HealingStageConfig(recipes=("qlora",))
    with pytest.raises(TypeError, match="tuple of recipe names"):
        HealingStageConfig(recipes="lora")
    with pytest.raises(ValueError, match="tokens >= block_len"):
        HealingStageConfig(tokens=100)
    with pytest.raises(ValueError, match="variant name"):
        HealingStageConfig(variant_prefix="no spaces")
