"""The notebooks' explorers: only computed choices are offered, the default exists, views draw without overlaps.

The browser suite (tests/browser) walks the same explorers in JupyterLab; these tests check the
choices and the figures in process, on synthetic stage results.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from frankenllama.figures import evaluation, explorer, healing, pruning, style
from frankenllama.similarity import layer_similarity
from frankenllama.eval.paired import paired_difference
from frankenllama.stages.evaluation import BASELINE, paired_table
from frankenllama.stages.pruning import best_strategies
from tiny_lm import tiny_llama

L = 6
CURVES = pd.DataFrame(
    [{"strategy": "block-influence", "granularity": "layer", "k": k, "units": list(range(k)), "layers": list(range(k)),
      "eval_ppl": 30.0 + 10 * k} for k in (0, 1, 2, 3)]
    + [{"strategy": "sleb", "granularity": "layer", "k": k, "units": [5 - i for i in range(k)],
        "layers": [5 - i for i in range(k)], "eval_ppl": 30.0 + 5 * k} for k in (0, 1, 2)]  # a search: fewer k's
    + [{"strategy": "part-swap", "granularity": "sublayer", "k": k, "units": u, "layers": layers, "eval_ppl": 30.0 + 4 * k}
       for k, u, layers in ((1, [2, 5], []), (2, [2, 3, 6, 9], [1]))]  # units 2·ℓ + part: attn of 1, block 1 / attn 3, mlp 4
)  # fmt: skip


@pytest.fixture(scope="module")
def sim():
    ids = torch.randint(3, 96, (4, 16), generator=torch.Generator().manual_seed(0))  # (N, T)
    return layer_similarity(tiny_llama(num_layers=L), ids, batch_size=2)


def controls(box):
    """(dropdown, toggle buttons) of an explorer box."""
    return box.children[0], box.children[1]


def test_selection_explorer_offers_only_computed_pairs_and_opens_on_the_best(sim):
    best = best_strategies(CURVES, granularity=None)
    box = pruning.selection_explorer(CURVES, sim, 30.0, best, k=2)
    pick, follow = controls(box)
    assert explorer.EXPLORER_CLASS in box._dom_classes
    assert list(pick.options) == ["block-influence", "sleb", "part-swap"]
    assert (pick.value, follow.value) == ("part-swap", 2)  # the best at k = 2, sub-layer included
    assert list(follow.options) == [1, 2]
    pick.value = "block-influence"
    follow = controls(box)[1]
    assert list(follow.options) == [1, 2, 3] and follow.value == 2
    follow.value = 3
    pick.value = "sleb"  # k = 3 was never searched: the nearest offered k
    follow = controls(box)[1]
    assert list(follow.options) == [1, 2] and follow.value == 2
    plt.close("all")


def test_explorer_redraws_once_per_choice():
    calls = []

    def draw(a, b):
        calls.append((a, b))
        return plt.figure()

    box = explorer.explorer({"x": [1, 2, 3], "y": [5]}, draw, ("first", "second"), ("x", 2))
    pick, follow = controls(box)
    pick.value = "y"
    follow_value = controls(box)[1].value
    pick.value = "x"
    assert calls == [("x", 2), ("y", 5), ("x", 3)] and follow_value == 5
    with pytest.raises(ValueError, match="at least one"):
        explorer.explorer({"x": []}, draw, ("first", "second"), ("x", 1))


def text_boxes(fig):
    """Window extents of every axis label, colour-bar label, title and legend of ``fig``."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = {}
    for i, ax in enumerate(fig.axes):
        for which, label in (("x", ax.xaxis.label), ("y", ax.yaxis.label)):
            if label.get_text():
                boxes[f"axes{i}.{which}label"] = label.get_window_extent(renderer)
    for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
        boxes[f"legend{id(legend)}"] = legend.get_window_extent(renderer)
    return boxes


def test_selection_view_marks_parts_apart_and_no_text_overlaps(sim):
    style.set_style()
    row = CURVES[(CURVES.strategy == "part-swap") & (CURVES.k == 2)].iloc[0]
    fig = pruning._view_of(row, sim, 30.0, width=style.TEXT_WIDTH)
    left, right = fig.axes[0], fig.axes[1]
    hatches = [bar.get_hatch() or "" for bar in right.patches]
    assert hatches == ["", "", "", "///", "...", ""]  # block 1 whole, attention of 3, MLP of 4
    colors = [matplotlib.colors.to_hex(bar.get_facecolor()) for bar in right.patches]
    assert colors[1] == style.PALETTE[3].lower() and colors[0] == style.PALETTE[0].lower()
    boxes = text_boxes(fig)
    names = list(boxes)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not boxes[a].overlaps(boxes[b]), f"{a} overlaps {b}"
    legend = fig.legends[0].get_window_extent()
    for ax in fig.axes:  # the legend sits below the panels, not on the heatmap
        assert not legend.overlaps(ax.get_window_extent()), "legend on a panel"
    plt.close(fig)


def test_every_pair_of_the_pruning_explorer_draws_a_different_figure(sim):
    pngs = set()
    for (strategy, k), row in {(r.strategy, r.k): r for r in CURVES[CURVES.k > 0].itertuples()}.items():
        fig = pruning._view_of(pd.Series(row._asdict()), sim, 30.0, width=6.0)
        fig.canvas.draw()
        pngs.add(bytes(np.asarray(fig.canvas.buffer_rgba())))
        plt.close(fig)
    assert len(pngs) == 7


def item_stage() -> dict:
    """Two tasks of 40 items, the original and two variants, with every per-item metric (seeded)."""
    rng = np.random.default_rng(0)
    results = {}
    for name, shift in ((BASELINE, 0.0), ("pruned", 0.25), ("healed", 0.1)):
        tasks = {}
        for task in ("arc_easy", "piqa"):
            acc = (rng.random(40) > 0.4 + shift).astype(float)
            items = [{"item": i, "acc": a, "acc_norm": a, "gold_bpb": 1.0 + shift + 0.3 * rng.random(),
                      "gold_prob": 0.5, "gold_prob_norm": 0.6 - shift + 0.2 * rng.random()} for i, a in enumerate(acc)]
            tasks[task] = {"n": 40, "acc": acc.mean(), "acc_norm": acc.mean(), "items": items}
        results[name] = {"tasks": tasks}
    return {"results": results, "meta": {BASELINE: {}, "pruned": {"best_at_k": True}, "healed": {"kind": "healed"}}}


def test_task_differences_are_paired_per_task_and_average_as_the_paired_table():
    stage = item_stage()
    table = evaluation.task_differences(stage, "pruned", "gold_bpb", n_boot=500)
    assert list(table.index) == ["arc_easy", "piqa", "average"] and table["n"].tolist() == [40, 40, 80]
    for task in ("arc_easy", "piqa"):
        x = [it["gold_bpb"] for it in stage["results"]["pruned"]["tasks"][task]["items"]]
        y = [it["gold_bpb"] for it in stage["results"][BASELINE]["tasks"][task]["items"]]
        d = paired_difference(x, y, n_boot=500)
        assert (table.loc[task, "diff"], table.loc[task, "low"], table.loc[task, "high"]) == pytest.approx((d.diff, d.low, d.high))
    macro = paired_table(stage, "gold_bpb", n_boot=500).loc["pruned"]
    assert (table.loc["average", "diff"], table.loc["average", "low"]) == pytest.approx((macro["diff"], macro["low"]))
    assert table.loc["average", "diff"] == pytest.approx(0.25, abs=0.1) and table.loc["average", "significant"]
    assert evaluation.task_differences(stage, "pruned", "acc_norm").loc["arc_easy", "diff"] == pytest.approx(
        100 * (stage["results"]["pruned"]["tasks"]["arc_easy"]["acc"] - stage["results"][BASELINE]["tasks"]["arc_easy"]["acc"]))


def test_difference_explorer_offers_each_variant_and_three_paired_metrics():
    stage = item_stage()
    box = evaluation.difference_explorer(stage)
    pick, follow = controls(box)
    assert list(pick.options) == ["pruned", "healed"] and list(follow.options) == ["gold_bpb", "gold_prob_norm", "acc_norm"]
    assert follow.value == "gold_bpb" and "paired bootstrap" in box.children[2].value
    pngs = set()
    for variant in ("pruned", "healed"):
        for metric in ("gold_bpb", "gold_prob_norm", "acc_norm"):
            fig = evaluation._difference_view(stage, variant, metric, width=6.0)
            assert "95 % paired interval" in fig.axes[0].get_xlabel()
            fig.canvas.draw()
            pngs.add(bytes(np.asarray(fig.canvas.buffer_rgba())))
            plt.close(fig)
    assert len(pngs) == 6  # every choice draws its own view
    only = {"results": {BASELINE: stage["results"][BASELINE]}}
    assert "No variants" in evaluation.difference_explorer(only).value
    plt.close("all")


def heal_result(recipe: str, curve: list[tuple[int, float]], losses: list[tuple[int, float]], ood: float | None = 2.0):
    """A stand-in for ``HealResult`` with what the explorer reads (out-of-domain perplexity ``ood`` × in-domain)."""
    points = [{"tokens": t, "ppl": p, **({"ppl_ood": ood * p} if ood else {})} for t, p in curve]
    return SimpleNamespace(config=SimpleNamespace(recipe=recipe), curve=points, losses=[{"tokens": t, "ce": c} for t, c in losses])


def test_recipe_explorer_follows_each_recipes_evaluation_points():
    results = [heal_result("lora", [(0, 80.0), (512, 60.0), (1024, 50.0)], [(256, 4.0), (1024, 3.6)]),
               heal_result("patch", [(0, 70.0)], [])]
    box = healing.recipe_explorer(results, 30.0, 80.0, 45.0, 160.0)
    pick, follow = controls(box)
    assert list(pick.options) == ["lora", "patch"] and pick.value == "lora"  # ends lowest: 50 < 70
    assert list(follow.options) == [0, 512, 1024] and follow.value == 1024
    assert "out-of-domain text (an eval-only corpus" in box.children[2].value
    pick.value = "patch"
    follow = controls(box)[1]
    assert list(follow.options) == [0] and follow.value == 0
    levels = healing._domains(results, 30.0, 80.0, 45.0, 160.0)
    assert levels == {"ppl": (30.0, 80.0), "ppl_ood": (45.0, 160.0)}
    fig = healing._recipe_view(results, "lora", 512, levels, width=6.0)
    assert "in-domain PPL 60.00, out-of-domain PPL 120.00" in fig._suptitle.get_text()
    assert [ax.get_ylabel() for ax in fig.axes[1:]] == ["eval perplexity, in-domain", "eval perplexity, out-of-domain"]
    boxes = text_boxes(fig)
    assert not boxes["axes0.ylabel"].overlaps(boxes["axes1.ylabel"])
    assert not boxes["axes1.ylabel"].overlaps(boxes["axes2.ylabel"])
    # runs without out-of-domain points: the in-domain panel only, and the caption says so
    plain = [heal_result("lora", [(0, 80.0), (512, 60.0)], [(512, 4.0)], ood=None)]
    assert list(healing._domains(plain, 30.0, 80.0, 45.0, 160.0)) == ["ppl"]
    assert "not measured" in healing.recipe_explorer(plain, 30.0, 80.0, 45.0, 160.0).children[2].value
    assert len(healing.plot_ppl_vs_tokens(plain, 30.0, 80.0).axes) == 1
    assert len(healing.plot_ppl_vs_tokens(results, 30.0, 80.0, 45.0, 160.0).axes) == 2
    plt.close("all")
