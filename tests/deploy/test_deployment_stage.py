"""Notebook 06's stage end to end on a pico llama (no real model): heal, export, run in llama.cpp, cache.

Values checked: one row per (model, qtype) with the healed variant after the unhealed ones; the
unpruned f16 row agrees with itself (KL 0, top-1 100 %); perplexity equals the exp of the mean of the
per-block NLLs it stores; the file sizes are the files' (q8_0 smaller than f16); the healed variant
is saved under the deployment's name (not one notebook 04 compares) and a second call reads the cache.
"""

from __future__ import annotations

import math
import random

import pytest
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from frankenllama import paths
from frankenllama.export import llamacpp
from frankenllama.stages.common import DataConfig, shared_model
from frankenllama.stages.deployment import DeploymentConfig, deployment_stage
from frankenllama.stages.healing import HealingStageConfig
from frankenllama.variants import list_variants
from tiny_lm import CHARS, SPECIALS, tiny_llama

pytestmark = [
    pytest.mark.deploy,
    pytest.mark.skipif(not llamacpp.available(),
                       reason="llama_cpp is not importable: pip install -r requirements-deploy.txt"),
]


def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """tiny_lm's character tokenizer plus one merge ("t" "h"): llama.cpp refuses a BPE vocabulary without merges."""
    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *CHARS, "th"])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[("t", "h")], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")


@pytest.fixture
def config(tmp_path, monkeypatch):
    """A saved 4-block pico llama, a word corpus, the cache in ``tmp_path``; k = 1 (block 2), healed by the
    notebook's default recipe (linear patch, then distillation into LoRA)."""
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(paths, "VARIANTS_DIR", tmp_path / "cache" / "variants")
    model_dir = tmp_path / "pico"
    tiny_llama(num_layers=4).save_pretrained(model_dir)
    bpe_tokenizer().save_pretrained(model_dir)
    rng = random.Random(0)
    words = "the a of and to in is was on for by with as at from it that this an be".split()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(rng.choice(words) for _ in range(30)) for _ in range(80)))
    heal = HealingStageConfig(model=str(model_dir), corpus=str(corpus), recipes=("linear-patch+kd-lora",),
                              tokens=32, kd_top_k=8,
                              block_len=16, batch_size=2, eval_every=1, eval_blocks=2, patch_tokens=32,
                              variant_prefix="deploy-test")
    yield DeploymentConfig(model=str(model_dir), removals={1: [2]}, strategies={1: "given"}, prune_ks=(1,),
                           qtypes=("f16", "q8_0"), healing=heal, data=DataConfig(str(corpus), "eval", 16, 3),
                           ood_data=DataConfig(str(corpus), "eval", 24, 2), prompt_tokens=8, decode_tokens=4,
                           repeats=1, threads=1, pre_tokenizer="default")
    shared_model.cache_clear()


def test_deployment_stage_rows_values_and_cache(config):
    rows = deployment_stage(config)
    assert [(r["variant"], r["qtype"]) for r in rows] == [
        ("k=0", "f16"), ("k=0", "q8_0"), ("k=1", "f16"), ("k=1", "q8_0"), ("k=1 healed", "f16"), ("k=1 healed", "q8_0")]
    original = rows[0]
    assert original["kl"] == pytest.approx(0, abs=1e-6) and original["top1"] == 1.0 and original["kl_ood"] < 1e-6
    for row in rows:
        assert row["ppl"] == pytest.approx(math.exp(sum(row["nll_blocks"]) / 3), rel=1e-5)
        assert len(row["nll_blocks_ood"]) == 2 and row["ppl_ood"] > 1
        assert row["peak_rss_bytes"] > row["file_bytes"] > 0 and row["decode_tok_s"] > 0 and row["prefill_tok_s"] > 0
        assert row["n_blocks"] == (4 if row["k"] == 0 else 3) and row["removed_pct"] == 25.0 * row["k"]
    assert rows[1]["file_bytes"] < rows[0]["file_bytes"] and rows[2]["file_bytes"] < rows[0]["file_bytes"]
    assert rows[2]["removed_blocks"] == [2] and rows[4]["healed"] and rows[4]["strategy"] == "given"
    assert rows[2]["kl"] > 0 and rows[4]["ppl"] != rows[2]["ppl"]  # healing changed the model
    assert [v.name for v in list_variants()] == ["deploy-test-k1-linear-patch+kd-lora"]
    assert deployment_stage(config) == rows  # read from the cache
