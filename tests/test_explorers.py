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
from frankenllama.stages.evaluation import BASELINE
from frankenllama.stages.pruning import best_strategies
from test_evaluation import STAGE
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


def test_accuracy_differences_by_hand():
    table = evaluation.accuracy_differences(STAGE, "pruned", "acc_norm")
    assert list(table.index) == ["arc_easy", "piqa", "average"]
    assert table.loc["arc_easy", "difference"] == pytest.approx(-25.0)
    assert table.loc["piqa", "difference"] == pytest.approx(-35.0)
    assert table.loc["average", "difference"] == pytest.approx(-30.0)
    se = 100 * np.sqrt(0.1**2 + 0.1**2)  # both stderrs 0.1: unpaired
    assert table.loc["piqa", "half_width"] == pytest.approx(1.96 * se)
    assert table.loc["average", "half_width"] == pytest.approx(1.96 * np.sqrt(2 * se**2) / 2)


def test_difference_explorer_offers_each_variant_and_both_metrics():
    box = evaluation.difference_explorer(STAGE, "acc")
    pick, follow = controls(box)
    assert list(pick.options) == ["pruned"] and list(follow.options) == ["acc", "acc_norm"] and follow.value == "acc"
    assert "unpaired" in box.children[2].value
    only = {"results": {BASELINE: STAGE["results"][BASELINE]}}
    assert "No variants" in evaluation.difference_explorer(only).value
    plt.close("all")


def heal_result(recipe: str, curve: list[tuple[int, float]], losses: list[tuple[int, float]]):
    """A stand-in for ``HealResult`` with what the explorer reads."""
    return SimpleNamespace(config=SimpleNamespace(recipe=recipe), curve=[{"tokens": t, "ppl": p} for t, p in curve],
                           losses=[{"tokens": t, "ce": c} for t, c in losses])


def test_recipe_explorer_follows_each_recipes_evaluation_points():
    results = [heal_result("lora", [(0, 80.0), (512, 60.0), (1024, 50.0)], [(256, 4.0), (1024, 3.6)]),
               heal_result("patch", [(0, 70.0)], [])]
    box = healing.recipe_explorer(results, 30.0, 80.0)
    pick, follow = controls(box)
    assert list(pick.options) == ["lora", "patch"] and pick.value == "lora"  # ends lowest: 50 < 70
    assert list(follow.options) == [0, 512, 1024] and follow.value == 1024
    pick.value = "patch"
    follow = controls(box)[1]
    assert list(follow.options) == [0] and follow.value == 0
    fig = healing._recipe_view(results, "lora", 512, 30.0, 80.0, width=6.0)
    assert "eval PPL 60.00" in fig._suptitle.get_text()
    boxes = text_boxes(fig)
    assert not boxes["axes0.ylabel"].overlaps(boxes["axes1.ylabel"])
    plt.close("all")
