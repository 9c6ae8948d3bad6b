"""Notebook 05's stage on a pico llama: every pipeline at every k, equal size and budget, paired tables, cached.

Values checked: each pipeline removes what its strategy's pruning-curve row says and the layer
pipelines at one k have one parameter count (the sub-layer recipe no more); trained pipelines see the
same training tokens; the no-healing variant is the pruned model itself; the per-block NLLs equal
``token_nll`` block by block; the table's perplexity ratio is exp of the mean NLL difference; a second
call trains nothing; the generated text calls a difference real only where its interval excludes it.
"""

from __future__ import annotations

import dataclasses
import json
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from frankenllama import paths
from frankenllama.figures.explorer import EXPLORER_CLASS
from frankenllama.figures.recipe import recipe_explorer, study_figure
from frankenllama.data import load_corpus, token_blocks
from frankenllama.eval.perplexity import token_nll
from frankenllama.eval.zero_shot import TaskEvalConfig
from frankenllama.eval.efficiency import SpeedConfig
from frankenllama.healing import save
from frankenllama.models import load_model
from frankenllama.stages import DataConfig, PruningConfig, ScoringConfig, SimilarityConfig, evaluation, shared_model
from frankenllama.stages.evaluation import BASELINE, EvaluationConfig, comparison_table
from frankenllama.stages.healing import HealingStageConfig
from frankenllama.stages.profiles import OURS_DEFAULT
from frankenllama.stages.recipe import (OURS, PEERS, RecipeStudyConfig, applied_recipe, recipe_stage, study_summary,
                                        study_table)
from frankenllama.sublayer import load_sublayer_pruned, prune_sublayers
from frankenllama.surgery import drop_layers
from frankenllama.variants import META_FILE
from tiny_lm import WORDS, char_tokenizer, pico_workbook, tiny_llama

LAYERS = 5
STRATEGIES = ("block-influence", "angular-block", "angular-block-all", "sleb", "reverse", "part-swap")


@pytest.fixture
def workbook(tmp_path, monkeypatch):
    """A saved pico llama, a word corpus, a JSONL task, and the cache and variant store in ``tmp_path``."""
    folder, corpus, _ = pico_workbook(tmp_path, monkeypatch, LAYERS, 120)
    task = tmp_path / "tiny.jsonl"
    items = [{"query": f"Q: {w}?\nA:", "choices": [" yes", " no", " maybe"], "gold": i % 3} for i, w in enumerate(WORDS[:8])]
    task.write_text("\n".join(json.dumps(x) for x in items) + "\n")
    model, text = str(folder), str(corpus)
    pruning = PruningConfig(
        similarity=SimilarityConfig(model, DataConfig(text, "calib", 16, 6), batch_size=3),
        scoring=ScoringConfig(DataConfig(text, "calib", 16, 4), batch_size=2, sublayer_blocks=2),
        eval_data=DataConfig(text, "eval", 16, 4), strategies=STRATEGIES, ks=(0, 1, 2), sublayer_ks=(0, 1, 2), batch_size=2,
    )  # fmt: skip
    healing = HealingStageConfig(model=model, corpus=text, tokens=64, block_len=16, batch_size=2, eval_blocks=1,
                                 patch_tokens=64, kd_top_k=8, variant_prefix=None)  # fmt: skip
    evaluation = EvaluationConfig(model=model, tasks=TaskEvalConfig((str(task),)), corpus=text, ood_corpus=text,
                                  block_len=16, ppl_blocks=3, fidelity_blocks=0, speed=SpeedConfig((1,), 4, 2, 1, warmup=0, threads=1), prompts=(),
                                  max_new_tokens=1, exclude_prefix=None)  # fmt: skip
    config = RecipeStudyConfig(pruning=pruning, healing=healing, evaluation=evaluation, ours=OURS_DEFAULT, ks=(1, 2),
                               zero_shot_ks=(2,), variant_prefix="t-recipe", n_boot=200)  # fmt: skip
    yield config
    shared_model.cache_clear()


def test_every_pipeline_at_equal_size_and_budget_then_cached(workbook, monkeypatch):
    config = workbook
    study = recipe_stage(config)
    runs = study.runs
    assert len(runs) == 2 * len(config.pipelines) and set(runs.pipeline) == {*PEERS, OURS}
    for k, group in runs.groupby("k"):
        layer = group[group.pipeline != OURS]
        assert layer.params_M.nunique() == 1  # k whole blocks each
        assert group[group.pipeline == OURS].params_M.iloc[0] <= layer.params_M.iloc[0] + 1e-9
        trained = group[group.recipe.isin(["lora", "partial", "kd-lora", "linear-patch+kd-lora"])]
        assert (trained.train_tokens == config.healing.tokens).all()  # one training budget for all
        assert (group[group.pipeline.isin(["sleb", "replaceme"])].train_tokens == 0).all()
    assert runs.set_index(["k", "pipeline"]).loc[(2, "lu"), "removed"] == [2, 3]  # reverse: the blocks before the last
    assert (paths.VARIANTS_DIR / "t-recipe-40-sleb" / META_FILE).is_file()  # 2 of 5 blocks = 40 %

    # the no-healing variant is the pruned model itself; its NLLs are token_nll block by block
    teacher, tokenizer = load_model(config.healing.model)
    sleb = runs.set_index(["k", "pipeline"]).loc[(2, "sleb")]
    pruned = drop_layers(teacher, sleb.removed)
    blocks = token_blocks(tokenizer, load_corpus(config.healing.corpus, "eval"), 16, max_blocks=3)
    direct = [token_nll(pruned, b[None])[0] / token_nll(pruned, b[None])[1] for b in blocks]
    nlls = {k: e["results"] for k, e in study.evaluations.items()}
    assert nlls[2]["t-recipe-40-sleb"]["block_nll"] == pytest.approx(direct, rel=1e-5)
    assert set(nlls[1]) == {BASELINE, *runs[runs.k == 1].variant}  # one evaluation per ratio, its variants only
    assert nlls[1]["t-recipe-20-sleb"]["tasks"] == {} and nlls[2]["t-recipe-40-sleb"]["tasks"]  # zero-shot at k = 2
    assert all(r["kl"] is None and r["top1_agreement"] is None for e in nlls.values() for r in e.values())  # no fidelity
    assert comparison_table(study.evaluations[2])[["kl", "top1_%"]].isna().all().all()  # shown as missing, not as 0

    table = study_table(study)
    row = table[(table.percent == 40) & (table.pipeline == "sleb")].iloc[0]
    want = math.exp(np.mean(nlls[2]["t-recipe-40-sleb"]["block_nll"]) - np.mean(nlls[2][BASELINE]["block_nll"]))
    assert row.ppl_in_x == pytest.approx(want) and row.ppl_in_low <= row.ppl_in_x <= row.ppl_in_high
    assert not pd.isna(row.bpb_orig) and pd.isna(table[(table.percent == 20) & (table.pipeline == "sleb")].iloc[0].get("bpb_orig"))
    assert table.iloc[0].pipeline == BASELINE and table.iloc[0].params_M > row.params_M

    text = study_summary(table)  # generated from the pico table: one line per peer and ratio, then the half-widths
    assert text.count("* vs **") == 2 * len(PEERS) and "Median 95 % interval half-widths" in text
    fig = study_figure(table, paths.CACHE_DIR / "figures")
    assert (paths.CACHE_DIR / "figures" / "recipe_study.pdf").is_file() and len(fig.axes) == 4
    box = recipe_explorer(table)
    pick, ratios = box.children[0], box.children[1]
    assert EXPLORER_CLASS in box._dom_classes and (pick.value, ratios.value) == (OURS, 40)
    assert list(pick.options) == list(config.pipelines) and list(ratios.options) == [20, 40]
    for pipeline in pick.options:  # every choice draws (the zero-shot panels say where nothing was measured)
        pick.value = pipeline
        for r in box.children[1].options:
            box.children[1].value = r
            assert not [o for o in box.children[-1].outputs if o.get("output_type") == "error"]

    loads = []  # every model folder the re-run loads (it needs none: the heals' records and the measures are cached)
    monkeypatch.setattr(save, "load_sublayer_pruned",
                        lambda *a, **kw: loads.append(a) or load_sublayer_pruned(*a, **kw))
    monkeypatch.setattr(evaluation, "load_model", lambda *a, **kw: loads.append(a) or load_model(*a, **kw))
    again = recipe_stage(config)  # every healed variant is read back: the recorded healing time does not change
    assert again.runs.heal_s.tolist() == runs.heal_s.tolist()
    assert again.evaluations == study.evaluations
    assert loads == []


def test_the_patch_is_dropped_where_no_whole_block_run_is_removed():
    model = tiny_llama(num_layers=4)
    assert applied_recipe("linear-patch+kd-lora", prune_sublayers(model, [2, 7])) == ("kd-lora", None)
    assert applied_recipe("linear-patch", prune_sublayers(model, [2, 7])) == (None, None)
    assert applied_recipe("linear-patch+lora", drop_layers(model, [1, 2])) == ("linear-patch+lora", (1, 2))
    assert applied_recipe("linear-patch", drop_layers(model, [0])) == (None, None)  # no MLP before block 0
    assert applied_recipe("lora", drop_layers(model, [0])) == ("lora", None)


def test_the_summary_says_beats_only_where_the_interval_excludes_no_difference():
    table = pd.DataFrame([
        {"percent": 0, "pipeline": BASELINE},
        {"percent": 20, "pipeline": "shortgpt", "strategy": "block-influence", "recipe": "lora",
         "ppl_ood_vs_ours_x": 1.3, "ppl_ood_vs_ours_low": 1.2, "ppl_ood_vs_ours_high": 1.4,
         "acc_norm_ours": -1.0, "acc_norm_ours_low": -3.0, "acc_norm_ours_high": 1.0},
        {"percent": 20, "pipeline": "sleb", "strategy": "sleb", "recipe": "none",
         "ppl_ood_vs_ours_x": 0.8, "ppl_ood_vs_ours_low": 0.7, "ppl_ood_vs_ours_high": 0.9},
        {"percent": 20, "pipeline": OURS, "strategy": "part-swap", "recipe": "linear-patch+kd-lora"},
    ])
    text = [line for line in study_summary(table).splitlines() if line.startswith("* vs")]
    shortgpt, sleb = text
    assert "the recipe beats it on out-of-domain perplexity 1.30×" in shortgpt
    assert "not resolved" in shortgpt and "acc_norm -1.0 pts" in shortgpt.split("not resolved")[1]
    assert "it beats the recipe on out-of-domain perplexity 0.80×" in sleb and "the recipe beats" not in sleb


def test_bad_settings_are_refused_with_the_fix(workbook):
    config = workbook
    with pytest.raises(ValueError, match="not points of the pruning curves"):
        recipe_stage(dataclasses.replace(config, ks=(3,), zero_shot_ks=None))
    with pytest.raises(ValueError, match="pipelines must be distinct names"):
        dataclasses.replace(config, pipelines=("shortgpt", "minitron"))
    with pytest.raises(KeyError, match="unknown strategy"):
        dataclasses.replace(config, ours=("deepest-first", "lora"))
    with pytest.raises(KeyError, match="unknown healing recipe"):
        dataclasses.replace(config, ours=("sleb", "qlora"))
    with pytest.raises(ValueError, match="zero_shot_ks"):
        dataclasses.replace(config, zero_shot_ks=(3,))


def test_a_cached_heal_of_a_sub_block_pruned_model_returns_the_saved_weights(tmp_path):
    import torch

    from frankenllama.healing import HealConfig, heal

    teacher, tokenizer = tiny_llama(num_layers=4), char_tokenizer()
    student = prune_sublayers(teacher, [2, 4, 5, 7])  # attention of 1, block 2, MLP of 3
    ids = torch.randint(3, 90, (6, 16), generator=torch.Generator().manual_seed(0))  # (N, T)
    config = HealConfig(recipe="linear-patch+kd-lora", tokens=32, batch_size=2, patch_tokens=64, kd_top_k=8)
    first = heal(student, tokenizer, config, train_blocks=ids, teacher=teacher, calib_blocks=ids, out_dir=tmp_path / "v",
                 progress=False)  # fmt: skip
    again = heal(student, tokenizer, config, train_blocks=ids, teacher=teacher, calib_blocks=ids, out_dir=tmp_path / "v",
                 progress=False)  # fmt: skip
    assert again.cached and not first.cached
    with torch.no_grad():
        assert torch.allclose(again.model(ids).logits, first.model(ids).logits, atol=1e-5)


Interval = tuple[float, float, float]  # (difference, 95 % low, 95 % high)


def _difference_rows(bpb: dict[str, Interval], acc: dict[str, Interval]) -> pd.DataFrame:
    """A study table at 20 % with these gold bits-per-byte and acc_norm differences per pipeline (perplexity 1.2x)."""
    rows = [{"percent": 0, "pipeline": BASELINE}]
    for pipeline in bpb:
        (b, bl, bh), (a, al, ah) = bpb[pipeline], acc[pipeline]
        row = {"percent": 20, "pipeline": pipeline, "bpb_orig": b, "bpb_orig_low": bl, "bpb_orig_high": bh,
               "acc_norm_orig": a, "acc_norm_orig_low": al, "acc_norm_orig_high": ah}
        for d in ("in", "ood"):
            row |= {f"ppl_{d}_x": 1.2, f"ppl_{d}_low": 1.1, f"ppl_{d}_high": 1.3}
        rows.append(row)
    return pd.DataFrame(rows)


def test_study_figure_cuts_a_failed_pipeline_off_the_difference_axis(tmp_path):
    """One pipeline 15x further from 0 than the rest (Lu et al.'s +2.4 bits per byte) must not flatten the others."""
    bpb = {"shortgpt": (0.11, 0.07, 0.15), "lu": (2.41, 2.27, 2.55), OURS: (0.03, -0.01, 0.07)}
    fig = study_figure(_difference_rows(bpb, dict.fromkeys(bpb, (-3.0, -9.0, 3.0))), tmp_path)
    low, top = fig.axes[2].get_ylim()  # the gold bits-per-byte panel
    assert 0.15 < top < 0.5 and low < -0.01  # every interval but the failed one fits, and 0 stays in view
    assert [t.get_text() for t in fig.axes[2].texts] == ["+2.41"]  # the cut-off point is labelled with its value
    low, top = fig.axes[3].get_ylim()  # acc_norm: no outlier, no cut
    assert top >= 3.0 and low <= -9.0 and not fig.axes[3].texts


def test_study_figure_staggers_neighbouring_cut_labels_and_keeps_a_flat_axis_whole(tmp_path):
    """Two neighbouring pipelines off the scale get labels on different rows; an axis whose other points all
    sit at one value (nothing to squeeze: the smoke profile's zero-shot panel) is not cut, so the outlier is
    drawn where it is."""
    bpb = {"shortgpt": (0.02, 0.0, 0.04), "sleb": (1.34, 1.2, 1.5), "lu": (0.38, 0.3, 0.46), OURS: (0.01, -0.01, 0.03)}
    acc = {"shortgpt": (0.0, 0.0, 0.0), "sleb": (0.0, 0.0, 0.0), "lu": (12.5, 12.5, 12.5), OURS: (0.0, 0.0, 0.0)}
    fig = study_figure(_difference_rows(bpb, acc), tmp_path)
    labels = {t.get_text(): t.xyann[1] for t in fig.axes[2].texts}  # the bits-per-byte panel
    assert set(labels) == {"+1.34", "+0.38"} and labels["+1.34"] != labels["+0.38"]
    low, top = fig.axes[3].get_ylim()  # acc_norm: every other pipeline at 0
    assert top >= 12.5 and low <= 0.0 and not fig.axes[3].texts
