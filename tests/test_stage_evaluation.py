"""Notebook 04's stage on a pico llama and one pruned variant, with caches in a temporary folder.

The stage's numbers must equal direct calls of the measurements on the same token blocks, and a
second call must read every cache entry instead of recomputing.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import asdict
import json

import pytest
import torch

from frankenllama import cache
from frankenllama.data import load_corpus, token_blocks
from frankenllama.eval.efficiency import SpeedConfig
from frankenllama.eval.fidelity import next_token_fidelity
from frankenllama.eval.paired import paired_difference
from frankenllama.eval.perplexity import mean_nll, perplexity
from frankenllama.eval.zero_shot import TaskEvalConfig, evaluate_tasks
from frankenllama.models import load_model
from frankenllama.stages import evaluation as stage
from frankenllama.surgery import drop_layers
from frankenllama.variants import list_variants, save_variant
from tiny_lm import char_tokenizer, tiny_llama

WORDS = "the cat sat on a mat and a dog ran to the park while birds sang in old trees near the river bank"


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A model folder, one variant without layer 1, a corpus, a JSONL task; caches under tmp_path."""
    model, tokenizer = tiny_llama(num_layers=3), char_tokenizer()
    reference = tmp_path / "reference"
    model.save_pretrained(reference)
    tokenizer.save_pretrained(reference)
    save_variant("tiny-drop1", drop_layers(model, [1]), tokenizer, {"strategy": "hand", "layers": [1]}, root=tmp_path / "variants")
    corpus = tmp_path / "corpus.txt"
    words = WORDS.split()
    corpus.write_text("\n\n".join(" ".join(words[i % 7 :] + words[: i % 7]).capitalize() + f" {i}." for i in range(60)))
    other = tmp_path / "other.txt"  # the out-of-domain text: reversed word order, digits spelled out
    other.write_text("\n\n".join(" ".join(reversed(words[i % 5 :])) + " number " + "xyz"[i % 3] * (i % 4 + 1) for i in range(80)))
    task = tmp_path / "tiny.jsonl"
    items = [{"query": f"Q: {w}?\nA:", "choices": [" yes", " no", " maybe"], "gold": i % 3} for i, w in enumerate(words[:6])]
    task.write_text("\n".join(json.dumps(x) for x in items) + "\n")

    computed = []

    def counting_cached_json(stage_name, config, compute, **kwargs):
        def counted():
            computed.append(stage_name)
            return compute()

        return cache.cached_json(stage_name, config, counted, root=tmp_path / "cache", **kwargs)

    monkeypatch.setattr(stage, "cached_json", counting_cached_json)
    monkeypatch.setattr(stage, "list_variants", functools.partial(list_variants, root=tmp_path / "variants"))
    config = stage.EvaluationConfig(
        model=str(reference),
        tasks=TaskEvalConfig((str(task),), chat_template=True),
        corpus=str(corpus),
        ood_corpus=str(other),
        block_len=24,
        ppl_blocks=3,
        fidelity_blocks=2,
        speed=SpeedConfig(batch_sizes=(1,), prompt_len=8, new_tokens=2, repeats=1, warmup=0, threads=1),
        prompts=("Hi", "Why?"),
        max_new_tokens=3,
    )
    return config, computed, tmp_path


def test_stage_equals_direct_measurements_and_reads_its_cache(setup, monkeypatch):
    config, computed, tmp_path = setup
    out = stage.evaluation_stage(config)
    assert computed == ["evaluation", "evaluation", "efficiency", "generations"]
    assert list(out["results"]) == [stage.BASELINE, "tiny-drop1"]

    model, tokenizer = load_model(config.model)
    variant, _ = load_model(tmp_path / "variants" / "tiny-drop1")
    ids = token_blocks(tokenizer, load_corpus(config.corpus, "eval"), config.block_len, max_blocks=config.ppl_blocks)
    assert ids.shape == (3, 24)
    original, pruned = out["results"][stage.BASELINE], out["results"]["tiny-drop1"]
    assert original["perplexity"] == pytest.approx(perplexity(model, ids), rel=1e-6)
    assert pruned["perplexity"] == pytest.approx(perplexity(variant, ids), rel=1e-6)
    ood = token_blocks(tokenizer, load_corpus(config.ood_corpus, "eval"), config.block_len, max_blocks=config.ppl_blocks)
    assert ood.shape == (3, 24) and not torch.equal(ood, ids)
    assert original["perplexity_ood"] == pytest.approx(perplexity(model, ood), rel=1e-6)
    assert pruned["perplexity_ood"] == pytest.approx(perplexity(variant, ood), rel=1e-6)
    for key, blocks in (("block_nll", ids), ("block_nll_ood", ood)):  # each block's mean NLL, block by block
        assert pruned[key] == pytest.approx([mean_nll(variant, blocks[i : i + 1]) for i in range(3)], rel=1e-6)
    assert math.exp(sum(pruned["block_nll"]) / 3) == pytest.approx(pruned["perplexity"], rel=1e-9)
    assert (original["layers"], pruned["layers"]) == (3, 2)
    assert original["kl"] == pytest.approx(0.0, abs=1e-6) and original["top1_agreement"] == 1.0
    assert pruned["kl"] == pytest.approx(next_token_fidelity(model, variant, ids[:2]).kl, rel=1e-6) and pruned["kl"] > 0
    direct = evaluate_tasks(variant, tokenizer, config.tasks.tasks, chat_template=True)["tiny"]
    cached, want = dict(pruned["tasks"]["tiny"]), asdict(direct)
    cached_items, want_items = cached.pop("items"), want.pop("items")
    assert cached == pytest.approx(want)
    assert len(cached_items) == len(want_items) == direct.n
    assert all(c == pytest.approx(w) for c, w in zip(cached_items, want_items))  # per-item records survive the cache
    assert out["meta"]["tiny-drop1"] == {"strategy": "hand", "layers": [1]}

    table = stage.comparison_table(out)
    assert list(table.index) == [stage.BASELINE, "tiny-drop1"]  # one row per model
    assert table.loc[stage.BASELINE, "retained_%"] == pytest.approx(100.0)
    assert table.loc["tiny-drop1", "ppl_in_domain"] == pytest.approx(pruned["perplexity"])
    assert table.loc["tiny-drop1", "ppl_out_of_domain"] == pytest.approx(pruned["perplexity_ood"])
    assert table.loc["tiny-drop1", "ideal_x"] == pytest.approx(1.5)  # 3 / (3 - 1) blocks
    assert [r["model"] for r in out["speed"]] == [stage.BASELINE, "tiny-drop1"]
    assert len(out["generations"]) == 2 * len(config.prompts)

    meta = json.loads(next((tmp_path / "cache" / "evaluation").glob("*/meta.json")).read_text())
    assert meta["code"]["modules"] == sorted(stage.CODE)

    computed.clear()
    loads = []
    monkeypatch.setattr(stage, "load_model", lambda *a, **kw: loads.append(a) or load_model(*a, **kw))
    assert stage.evaluation_stage(config) == out  # every entry read back, nothing recomputed
    assert computed == [] and loads == []  # nor a variant loaded (only the speed runs and generations would need them)


def test_paired_perplexity_table_in_and_out_of_domain(setup):
    config, _, _ = setup
    out = stage.evaluation_stage(config)
    original, pruned = out["results"][stage.BASELINE], out["results"]["tiny-drop1"]
    for domain, ppl, key in (("in", "perplexity", "block_nll"), ("out", "perplexity_ood", "block_nll_ood")):
        table = stage.paired_perplexity_table(out, domain, n_boot=400)
        row = table.loc["tiny-drop1"]
        assert row["ppl"] == pytest.approx(pruned[ppl], rel=1e-9)
        assert row["ppl_ratio"] == pytest.approx(pruned[ppl] / original[ppl], rel=1e-9)
        d = paired_difference(pruned[key], original[key], n_boot=400)  # the same bootstrap, by hand, over 3 blocks
        assert (row["ratio_low"], row["ratio_high"]) == pytest.approx((math.exp(d.low), math.exp(d.high)))
        assert row["ratio_low"] <= row["ppl_ratio"] <= row["ratio_high"] and row["blocks"] == 3
        assert row["significant"] == (row["ratio_low"] > 1 or row["ratio_high"] < 1)
        base = table.loc[stage.BASELINE]
        assert (base["ppl_ratio"], base["ratio_low"], base["ratio_high"]) == (1.0, 1.0, 1.0) and not base["significant"]
    with pytest.raises(ValueError, match="domain"):
        stage.paired_perplexity_table(out, "ood")


def test_without_an_out_of_domain_corpus(setup):
    config, _, _ = setup
    out = stage.evaluation_stage(dataclasses.replace(config, ood_corpus=None))
    assert out["results"]["tiny-drop1"]["perplexity_ood"] is None and out["results"]["tiny-drop1"]["block_nll_ood"] is None
    assert math.isnan(stage.comparison_table(out).loc["tiny-drop1", "ppl_out_of_domain"])
    with pytest.raises(ValueError, match="ood_corpus"):
        stage.paired_perplexity_table(out, "out")
    assert stage.paired_perplexity_table(out, "in").loc["tiny-drop1", "ppl_ratio"] > 0


def test_a_new_variant_only_evaluates_that_one(setup):
    config, computed, tmp_path = setup
    stage.evaluation_stage(config)
    model, tokenizer = load_model(config.model)
    save_variant("tiny-drop2", drop_layers(model, [2]), tokenizer, {"strategy": "hand", "layers": [2]}, root=tmp_path / "variants")
    computed.clear()
    out = stage.evaluation_stage(config)
    assert computed == ["evaluation", "efficiency", "generations"]  # the speed table compares a new set
    assert list(out["results"]) == [stage.BASELINE, "tiny-drop1", "tiny-drop2"]
    assert len(stage.comparison_table(out)) == 3


def test_variant_selection(setup):
    config, _, tmp_path = setup
    model, tokenizer = load_model(config.model)
    save_variant("smoke-x", model, tokenizer, {}, root=tmp_path / "variants")
    names = lambda **kw: [v.name for v in stage.variants_to_compare(stage.EvaluationConfig(**kw))]  # noqa: E731
    assert names() == ["tiny-drop1"]
    assert names(exclude_prefix=None) == ["smoke-x", "tiny-drop1"]
    assert names(variant_prefix="smoke-", exclude_prefix=None) == ["smoke-x"]
    assert names(exclude_prefix=None, max_variants=1) == ["smoke-x"]
    assert names(variants=("tiny-drop1", "smoke-x")) == ["tiny-drop1", "smoke-x"]  # explicit: in the order given
    with pytest.raises(ValueError, match=r"\['healed-lora'\] are not in the store"):
        names(variants=("tiny-drop1", "healed-lora"))
    with pytest.raises(TypeError, match="tuple"):
        stage.EvaluationConfig(variants="tiny-drop1")
