"""The deployment study's pieces that need no llama.cpp: config validation, cuts, device budget, Pareto front,
the budget sentences, the table and the explorer's view."""

from __future__ import annotations

import csv

import pytest

import pandas as pd

from frankenllama import cli
from frankenllama.export.budget import best_under_memory, budget_summary, kv_cache_bytes, parse_bytes, read_table
from frankenllama.figures.deployment import _view, deployment_explorer, pareto_front, plot_quality_vs_bytes
from frankenllama.stages.deployment import DeploymentConfig, deployment_table, read_pruning_curves, with_best_cuts
from frankenllama.stages.healing import HealingStageConfig
from frankenllama.stages.profiles import build

KV = {"kv_layers": 30, "n_kv_heads": 3, "head_dim": 64}
TABLE = [
    {"variant": "k=0", "k": 0, "healed": False, "qtype": "f16", "file_bytes": 270_000_000, "ppl": 17.0, "top1": 1.0,
     "decode_tok_s": 50, **KV},
    {"variant": "k=0", "k": 0, "healed": False, "qtype": "q4_0", "file_bytes": 92_000_000, "ppl": 19.0, "top1": 0.9,
     "decode_tok_s": 90, **KV},
    {"variant": "k=6", "k": 6, "healed": False, "qtype": "q4_0", "file_bytes": 80_000_000, "ppl": 33.0, "top1": 0.7,
     "decode_tok_s": 100, **KV, "kv_layers": 25},
    {"variant": "k=6", "k": 6, "healed": False, "qtype": "f16", "file_bytes": 230_000_000, "ppl": 31.0, "top1": 0.8,
     "decode_tok_s": 60, **KV, "kv_layers": 25},
]


def test_kv_cache_bytes_by_hand():
    # 2 (K, V) x 30 layers x 3 heads x 64 dims x 2048 positions x 2 bytes
    assert kv_cache_bytes(TABLE[0], 2048) == 2 * 30 * 3 * 64 * 2048 * 2 == 47_185_920


def test_best_under_memory_picks_lowest_perplexity_that_fits():
    assert best_under_memory(TABLE, 10**9, 2048)["qtype"] == "f16"
    best = best_under_memory(TABLE, 150_000_000, 2048)
    assert (best["variant"], best["qtype"]) == ("k=0", "q4_0")
    assert best["footprint_bytes"] == 92_000_000 + 47_185_920
    best = best_under_memory(TABLE, 125_000_000, 2048)  # only the pruned q4_0 fits (80 + 39.3 MB)
    assert (best["variant"], best["qtype"]) == ("k=6", "q4_0")
    with pytest.raises(ValueError, match="smallest, k=6 q4_0, needs 119.3 MB"):
        best_under_memory(TABLE, 64_000_000, 2048)


def test_parse_bytes():
    assert parse_bytes("64MB") == 64_000_000 and parse_bytes("1.5GiB") == 3 * 2**29 and parse_bytes("1000") == 1000
    with pytest.raises(ValueError, match="memory size"):
        parse_bytes("lots")


def test_budget_verb(tmp_path, capsys):
    path = tmp_path / "deployment.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(TABLE[2]))
        writer.writeheader()
        writer.writerows(TABLE)
    assert cli.main(["budget", "--memory", "150MB", "--context", "2048", "--table", str(path)]) == 0
    assert capsys.readouterr().out.startswith("k=0 q4_0: perplexity 19.00")
    assert cli.main(["budget", "--memory", "64MB", "--context", "2048", "--table", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing fits" in err
    assert cli.main(["budget", "--memory", "64MB", "--table", str(tmp_path / "none.csv")]) == 2


def test_pareto_front_and_figure(tmp_path):
    front = pareto_front(TABLE)
    assert [(r["variant"], r["qtype"]) for r in front] == [("k=6", "q4_0"), ("k=0", "q4_0"), ("k=0", "f16")]
    plot_quality_vs_bytes(TABLE, tmp_path, name="q")
    assert (tmp_path / "q.pdf").is_file() and (tmp_path / "q.png").is_file()


def test_deployment_config_validates():
    config = DeploymentConfig(removals={6: [13, 14, 15, 16, 17, 18], 3: [16, 17, 18]})
    assert config.removals == ((3, (16, 17, 18)), (6, (13, 14, 15, 16, 17, 18))) and config.ks == [0, 3, 6]
    with pytest.raises(ValueError, match="2·k sublayer"):
        DeploymentConfig(removals={3: [33, 34, 35]}, granularity="sublayer")
    with pytest.raises(ValueError, match="qtypes"):
        DeploymentConfig(qtypes=("q3_k",))
    with pytest.raises(ValueError, match="one recipe"):
        DeploymentConfig(healing=HealingStageConfig(recipes=("lora", "kd-lora")))
    with pytest.raises(ValueError, match="whole-block"):
        DeploymentConfig(healing=HealingStageConfig(recipes=("lora",)), granularity="sublayer")
    config = DeploymentConfig(healing=HealingStageConfig(recipes=("lora",), variant_prefix="deploy"))
    assert config.healed_variant(6) == "deploy-k6-lora"
    with pytest.raises(ValueError, match="not both"):
        DeploymentConfig(healing=HealingStageConfig(recipes=("lora",), variant_prefix="deploy"),
                         recipe=build("smoke").recipe)


CURVES = pd.DataFrame([  # a pruning stage's table: at k = 3 a sub-block strategy is best overall, not among blocks
    {"strategy": "block-influence", "granularity": "layer", "k": 0, "layers": [], "units": [], "eval_ppl": 17.0},
    {"strategy": "block-influence", "granularity": "layer", "k": 3, "layers": [13, 14, 17], "units": [13, 14, 17],
     "eval_ppl": 24.9},
    {"strategy": "sleb", "granularity": "layer", "k": 3, "layers": [16, 17, 18], "units": [16, 17, 18],
     "eval_ppl": 21.2},
    {"strategy": "part-swap", "granularity": "sublayer", "k": 3, "layers": [16, 17], "units": [32, 33, 34, 35, 15, 37],
     "eval_ppl": 20.0},
    {"strategy": "block-influence", "granularity": "layer", "k": 6, "layers": [1, 2, 3, 4, 5, 6], "units": [],
     "eval_ppl": 40.0},
])


def test_with_best_cuts_takes_the_best_whole_block_strategy(tmp_path):
    config = with_best_cuts(DeploymentConfig(prune_ks=(3, 6)), CURVES)
    assert config.removals == ((3, (16, 17, 18)), (6, (1, 2, 3, 4, 5, 6)))
    assert config.strategies == ((3, "sleb"), (6, "block-influence"))
    with pytest.raises(ValueError, match="no whole-block strategy at k = \\[9\\]"):
        with_best_cuts(DeploymentConfig(prune_ks=(3, 9)), CURVES)
    # notebook 02's written table ("13 14 17" cells) gives the same cuts
    written = CURVES.assign(layers=[" ".join(map(str, v)) for v in CURVES.layers])
    written.to_csv(tmp_path / "pruning_curve.csv", index=False)
    again = with_best_cuts(DeploymentConfig(prune_ks=(3, 6)), read_pruning_curves(tmp_path / "pruning_curve.csv"))
    assert again == config


def test_profiles_build_the_deployment_config():
    default, smoke = build("default"), build("smoke")
    assert default.deployment.prune_ks == (3, 6, 9) and default.deployment.healing is None
    # the healed rows are notebook 05's recipe models: the same config, so the same saved variants
    for profile in (default, smoke):
        assert profile.deployment.recipe == profile.recipe
        assert set(profile.deployment.prune_ks) <= set(profile.recipe.ks)
    assert default.deployment.ood_data.corpus == "olmo-passages" and default.deployment.data.split == "eval"
    # notebook 04 leaves the recipe's variants out
    assert "recipe-20-frankenllama".startswith(default.evaluation.exclude_prefix)
    changed = build("smoke", overrides={"recipe.healing.tokens": 256, "deployment.repeats": 3})
    assert changed.deployment.recipe.healing.tokens == 256 and changed.deployment.repeats == 3


def _measured(row, nll):
    return {**row, "nll_blocks": nll, "ppl_ood": row["ppl"] * 1.5, "nll_blocks_ood": nll, "kl": 0.1, "top1": 0.8,
            "peak_rss_bytes": row["file_bytes"] + 50e6, "prefill_tok_s": 500.0, "removed_blocks": [13, 14]}


MEASURED = [_measured(TABLE[0], [2.8, 2.9, 2.7, 2.85]), _measured(TABLE[1], [2.9, 3.0, 2.9, 2.95]),
            _measured(TABLE[2], [3.5, 3.4, 3.6, 3.5]), _measured(TABLE[3], [3.4, 3.4, 3.5, 3.45])]


def test_budget_summary_names_each_winner_and_its_paired_interval():
    lines = budget_summary(MEASURED, 2048, n_boot=500)
    # mean block NLL: 3.5, 2.9375, 2.8125; footprints at 2048: k=6 q4_0 80 + 39.3, k=0 q4_0 92 + 47.2,
    # k=0 f16 270 + 47.2 MB (k=6 f16 is dominated)
    assert [line.split("**")[1] for line in lines] == ["k=6 q4_0", "k=0 q4_0", "k=0 f16"]
    assert lines[0].startswith("* from 119.3 MB below 139.2 MB") and lines[-1].startswith("* from 317.2 MB and above")
    assert "vs k=6 q4_0: Δ NLL -0.562" in lines[1] and lines[1].endswith("better")
    assert "vs k=0 q4_0: Δ NLL -0.125" in lines[2] and lines[2].endswith("better")
    assert len(budget_summary(MEASURED, 2048, quality="ppl_ood", n_boot=100)) == 3


def test_deployment_table_round_trips_through_the_budget_verb(tmp_path):
    table = deployment_table(MEASURED)
    assert "nll_blocks" not in table and table.removed_blocks[0] == "13 14"
    table.to_csv(tmp_path / "deployment.csv", index=False)
    rows = read_table(tmp_path / "deployment.csv")
    assert rows[2]["file_bytes"] == 80_000_000 and rows[2]["removed_blocks"] == "13 14"
    assert (best_under_memory(rows, 150_000_000, 2048)["variant"], rows[0]["healed"]) == ("k=0", "False")


def test_explorer_view_rings_the_choice_and_lists_it(tmp_path):
    fig = _view(MEASURED, "k=6", "q4_0", 7.0)
    assert len(fig.axes) == 3  # in domain, out of domain, the configuration
    text = fig.axes[-1].texts[0].get_text()
    assert text.startswith("k=6, q4_0") and "file: 80.0 MB" in text and "removed blocks: 13 14" in text
    box = deployment_explorer(MEASURED)
    assert box.children[0].value == "k=6" and box.children[1].value == "q4_0"  # the smallest Pareto point
    assert list(box.children[0].options) == ["k=0", "k=6"]


def test_explorer_views_differ_per_choice_and_text_does_not_overlap():
    import matplotlib.pyplot as plt
    import numpy as np

    from frankenllama.figures import style
    from test_explorers import text_boxes

    style.set_style()
    pngs = set()
    for row in MEASURED:
        fig = _view(MEASURED, row["variant"], row["qtype"], style.TEXT_WIDTH)
        boxes = {**text_boxes(fig), "configuration": fig.axes[-1].texts[0].get_window_extent()}
        names = list(boxes)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                assert not boxes[a].overlaps(boxes[b]), f"{row['variant']} {row['qtype']}: {a} overlaps {b}"
        pngs.add(bytes(np.asarray(fig.canvas.buffer_rgba())))
        plt.close(fig)
    assert len(pngs) == len(MEASURED)
