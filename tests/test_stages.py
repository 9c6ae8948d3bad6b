"""The stage layer on a tiny in-process llama with a temporary cache: values, not just files.

A stage must return what a direct call of the method it wraps returns, store it under a key of its
config and code, and read it back instead of recomputing.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from scipy import stats

import conftest
from frankenllama import paths
from frankenllama.cache import code_version, config_key
from frankenllama.eval.perplexity import perplexity
from frankenllama.scoring import SelectionContext as LayerScores
from frankenllama.selection import select_layers
from frankenllama.stages import (
    DataConfig,
    PruningConfig,
    ScoringConfig,
    SimilarityConfig,
    StudyConfig,
    best_selection,
    pruning_stage,
    shared_model,
    similarity_stage,
    study_stage,
)
from frankenllama.stages import pruning as pruning_module
from frankenllama.stages.profiles import PROFILES, UnknownProfileError, build

STRATEGIES = ("block-influence", "angular-block", "ablation-nll", "contiguous-nll", "sleb")


@pytest.fixture
def workbook(tmp_path, monkeypatch):
    """A tiny llama saved as a transformers folder, a text corpus, and an empty cache folder."""
    model = conftest.tiny_llama(num_layers=5, seed=3)
    tokenizer = conftest.tiny_tokenizer()
    folder = tmp_path / "tiny-llama"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    words = "the a of and to in is was on for by with as at from it that this an be".split()
    rng = random.Random(0)
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) for _ in range(300)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(docs))
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    return str(folder), str(corpus)


def _pruning_config(model: str, corpus: str) -> PruningConfig:
    return PruningConfig(
        similarity=SimilarityConfig(model, DataConfig(corpus, "calib", 16, 6), batch_size=3),
        scoring=ScoringConfig(DataConfig(corpus, "calib", 16, 4), batch_size=2, sublayer_blocks=2),
        eval_data=DataConfig(corpus, "eval", 16, 4), strategies=STRATEGIES, ks=(0, 1, 2), batch_size=2,
    )


def test_pruning_stage_picks_what_select_layers_picks_and_measures_eval_perplexity(workbook):
    model_name, corpus = workbook
    config = _pruning_config(model_name, corpus)
    curves = pruning_stage(config)
    model, tokenizer = shared_model(model_name)
    ctx = LayerScores(similarity_stage(config.similarity), model, config.scoring.calib.blocks(tokenizer, model),
                      batch_size=config.scoring.batch_size)
    for strategy in STRATEGIES:
        for k in (1, 2):
            row = curves[(curves.strategy == strategy) & (curves.k == k)].iloc[0]
            assert list(row.layers) == sorted(select_layers(ctx, k, strategy)), (strategy, k)
    eval_ids = config.eval_data.blocks(tokenizer, model)
    unpruned = curves[curves.k == 0].eval_ppl
    assert np.allclose(unpruned, perplexity(model, eval_ids), rtol=1e-5)
    # the best cut that notebook 03 heals is the row of lowest eval perplexity at that k
    strategy, layers = best_selection(config, 2)
    rows = curves[curves.k == 2]
    assert rows.set_index("strategy").eval_ppl[strategy] == rows.eval_ppl.min()
    assert layers == list(rows.set_index("strategy").layers[strategy])


def test_pruning_stage_reads_its_cache_instead_of_recomputing(workbook, monkeypatch):
    config = _pruning_config(*workbook)
    first = pruning_stage(config)
    folder = paths.CACHE_DIR / "pruning" / config_key("pruning", config, pruning_module.CODE)
    assert (folder / "result.json").exists() and (folder / "meta.json").exists()

    def refuse(*args, **kwargs):
        raise AssertionError("the cached result should have been read")

    monkeypatch.setattr(pruning_module, "Trunk", refuse)
    again = pruning_stage(config)
    assert again.drop(columns="select_seconds").equals(first.drop(columns="select_seconds"))


def test_study_correlations_are_spearman_of_the_scores_within_their_intervals(workbook):
    model_name, corpus = workbook
    pruning = _pruning_config(model_name, corpus)
    config = StudyConfig(pruning=pruning, proxies=("block-influence", "angular", "ablation-kl"), n_boot=50, draws=2,
                         sizes=(2,), ks=(1, 2), stability_strategies=("block-influence", "sleb"), search_sizes=(2,),
                         search_draws=1)
    study = study_stage(config)
    correlation = study["correlation"].set_index("proxy")
    model, tokenizer = shared_model(model_name)
    # the study's proxies are measured on the scores' calibration blocks (the ablation pass records them)
    ctx = LayerScores(model=model, calib=pruning.scoring.calib.blocks(tokenizer, model), batch_size=pruning.scoring.batch_size)
    truth = ctx.score("ablation-ppl")
    for proxy in config.proxies:
        rho = stats.spearmanr(ctx.score(proxy), truth).statistic
        assert correlation.spearman[proxy] == pytest.approx(rho, abs=1e-9)
        assert -1 <= correlation.low[proxy] <= correlation.high[proxy] <= 1
    stability = study["stability"]
    assert set(stability.strategy) == {"block-influence", "sleb"}
    assert stability.jaccard_with_full.between(0, 1).all()


def test_profiles_build_every_stage_from_one_place():
    for name in PROFILES:
        run = build(name)
        assert run.pruning.similarity == run.similarity  # notebook 02 reads notebook 01's cache
        assert run.study.pruning == run.pruning  # the study measures the curves' own scores
        assert run.heal_k in run.pruning.ks and run.heal_k > 0  # notebook 03 heals a measured cut
        assert set(run.study.ks) <= set(run.pruning.ks)
    assert build("smoke").pruning.eval_data.n_blocks < build("default").pruning.eval_data.n_blocks


def test_profile_overrides_reach_later_stages_and_bad_ones_are_named():
    run = build("default", overrides={"similarity.data.n_blocks": 128, "study.n_boot": 200, "pruning.ks": [0, 6]})
    assert run.similarity.data.n_blocks == 128 and run.pruning.similarity.data.n_blocks == 128
    assert run.study.n_boot == 200 and run.pruning.ks == (0, 6) and run.study.pruning.ks == (0, 6)
    with pytest.raises(KeyError, match="has no field 'n_blok'"):
        build(overrides={"pruning.eval_data.n_blok": 3})
    with pytest.raises(KeyError, match="name no stage"):
        build(overrides={"evaluate.limit": 3})
    with pytest.raises(UnknownProfileError, match="choose one of"):
        build("fast")


def test_code_version_follows_code_not_docstrings_or_comments(tmp_path, monkeypatch):
    module = tmp_path / "versioned_example.py"
    monkeypatch.syspath_prepend(str(tmp_path))
    module.write_text('"""Doc."""\n\ndef f(x):\n    """Square."""\n    return x * x\n')
    before = code_version(("versioned_example",))
    module.write_text('"""Other doc."""\n\n# a comment\ndef f(x):\n    """Squares x."""\n    return x * x  # why\n')
    assert code_version(("versioned_example",)) == before
    module.write_text('"""Doc."""\n\ndef f(x):\n    """Square."""\n    return x * x * 1.0\n')
    assert code_version(("versioned_example",)) != before
    with pytest.raises(ModuleNotFoundError):
        code_version(("no_such_module_here",))
