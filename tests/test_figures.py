"""Every figure function writes its PDF and PNG and returns a figure whose axes are labelled."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from frankenllama.figures import evaluation, pruning, similarity, style
from frankenllama.figures.tables import write_table
from frankenllama.similarity import layer_similarity
from frankenllama.stages.evaluation import BASELINE, comparison_table
from test_evaluation import STAGE
from tiny_lm import tiny_llama


@pytest.fixture(scope="module")
def sim():
    ids = torch.randint(3, 96, (4, 16), generator=torch.Generator().manual_seed(0))  # (N, T)
    return layer_similarity(tiny_llama(num_layers=6), ids, batch_size=2)


CURVES = pd.DataFrame(
    [{"strategy": s, "k": k, "eval_ppl": 20.0 * (1 + k) * f, "granularity": "layer", "layers": list(range(k))}
     for s, f in (("sleb", 1.0), ("angular", 1.5), ("random", 400.0)) for k in (0, 1, 2)]
)  # fmt: skip
SCORES = pd.DataFrame({"bi": [0.9, 0.1, 0.2, 0.3, 0.5, 0.8], "ablation": [1.0, 0.2, 0.1, 0.4, 0.3, 0.9]})
CORRELATION = pd.DataFrame({"proxy": ["bi", "angular"], "spearman": [0.6, -0.2], "low": [0.3, -0.6], "high": [0.8, 0.3]})
STABILITY = pd.DataFrame(
    [{"k": k, "strategy": s, "size": n, "jaccard_with_full": 0.5 + 0.1 * i}
     for k in (1, 2) for s in ("sleb", "bi") for i, n in enumerate((4, 8, 16))]
)  # fmt: skip


PAIRED = pd.DataFrame({"diff": [0.0, -30.0], "low": [0.0, -36.0], "high": [0.0, -20.0]}, index=[BASELINE, "pruned"])
PPL = {d: pd.DataFrame({"ppl": [20.0 * f, 40.0 * f], "ratio_low": [1.0, 1.8], "ratio_high": [1.0, 2.3]}, index=[BASELINE, "pruned"])
       for d, f in (("in", 1.0), ("out", 1.5))}  # fmt: skip


def test_pareto_error_bars_are_the_paired_intervals(tmp_path):
    style.set_style()
    fig = evaluation.pareto_figure(comparison_table(STAGE), tmp_path, "pareto_paired", PAIRED, PPL)
    assert [ax.get_ylabel() for ax in fig.axes] == ["average acc_norm (%)", "average acc_norm (%)",
                                                    "perplexity, in-domain", "perplexity, out-of-domain"]  # fmt: skip
    bars = fig.axes[0].containers[0]  # the pruned model's error bar: its average 30 % from 24 % to 40 %
    segment = bars.lines[2][0].get_segments()[0]
    assert segment[:, 1].tolist() == pytest.approx([30.0 - 6.0, 30.0 + 10.0])
    ood = fig.axes[3].containers[0].lines[2][0].get_segments()[0]  # out of domain: 60 within 1.8–2.3 × 30
    assert ood[:, 1].tolist() == pytest.approx([54.0, 69.0])
    plt.close(fig)


def test_pareto_markers_offset_sideways_stay_inside_the_axes(tmp_path):
    # five variants of one size, the smallest model: the outermost is drawn 8 points left of its x value
    names = [f"variant-{i}" for i in range(5)]
    table = pd.DataFrame({"params_M": [134.5] + [113.3] * 5, "decode_ms_b1": [58.6] + [48.8 + 0.2 * i for i in range(5)],
                          "average": [48.7, 43.3, 44.7, 44.7, 42.7, 43.3]}, index=[BASELINE, *names])  # fmt: skip
    style.set_style()
    fig = evaluation.pareto_figure(table, tmp_path, "pareto_offsets")
    fig.canvas.draw()
    for ax in fig.axes:
        radius = 5 / 2 * fig.dpi / 72  # markers are 5 points wide
        for bars in ax.containers:
            x, _ = bars.lines[0].get_transform().transform(bars.lines[0].get_xydata())[0]
            assert ax.bbox.x0 + radius <= x <= ax.bbox.x1 - radius, f"{bars.get_label()} is cut by the axes in {ax.get_xlabel()!r}"
    plt.close(fig)


def figure_calls(sim):
    """(file stem, call writing it) for every figure function of every figure module."""
    table = comparison_table(STAGE)
    return [
        ("angular_distance", lambda out: similarity.angular_heatmap(sim, out, highlight=[2, 3])),
        ("block_influence", lambda out: similarity.block_influence_bars(sim, out)),
        ("cosine_similarity", lambda out: similarity.cosine_matrix(sim, out)),
        ("pruning_curve", lambda out: pruning.pruning_curves(CURVES, out, baseline=20.0)),
        ("layer_scores", lambda out: pruning.score_profiles(SCORES, out)),
        ("proxy_vs_truth", lambda out: pruning.proxy_correlation(CORRELATION, out)),
        ("selection_stability", lambda out: pruning.stability(STABILITY, out)),
        ("selection", lambda out: pruning.selection_view(sim, [2, 3], "sleb, k = 2", out_dir=out)),
        ("pareto_accuracy", lambda out: evaluation.pareto_figure(table, out)),
        ("pareto_paired", lambda out: evaluation.pareto_figure(table, out, "pareto_paired", PAIRED, PPL)),
        ("task_retention", lambda out: evaluation.retention_figure(table, out)),
        ("only_baseline", lambda out: evaluation.retention_figure(table.loc[[BASELINE]], out, name="only_baseline")),
    ]


def test_every_figure_writes_pdf_and_png_with_labelled_axes(sim, tmp_path):
    style.set_style()
    for name, call in figure_calls(sim):
        fig = call(tmp_path)
        assert isinstance(fig, plt.Figure), name
        for suffix in (".pdf", ".png"):
            path = tmp_path / f"{name}{suffix}"
            assert path.is_file() and path.stat().st_size > 1000, path
        assert fig.axes, name
        for ax in fig.axes:  # every panel (and colour bar) names what it shows
            assert ax.get_xlabel() or ax.get_ylabel(), f"{name}: an axes without a label"
        main = fig.axes[0]
        assert main.get_xlabel() or main.get_ylabel()
        plt.close(fig)


def test_pruning_curve_clips_a_collapsing_strategy(tmp_path):
    fig = pruning.pruning_curves(CURVES, tmp_path, baseline=20.0, clip=100.0)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert ax.get_ylim()[1] == pytest.approx(20.0 * 100 * 1.4)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sleb", "angular", "random", "unpruned"]
    plt.close(fig)


def test_selection_view_marks_the_removed_layers(sim):
    fig = pruning.selection_view(sim, [3, 1])
    bars = fig.axes[1].patches  # axes: cosine, Block Influence, colour bar
    colours = [matplotlib.colors.to_hex(b.get_facecolor()).upper() for b in bars]
    assert [i for i, c in enumerate(colours) if c == style.PALETTE[3]] == [1, 3]
    plt.close(fig)


def test_save_figure_rejects_a_path_as_name(tmp_path):
    fig, _ = plt.subplots()
    with pytest.raises(ValueError, match="bare stem"):
        style.save_figure(fig, "a/b", tmp_path)
    plt.close(fig)


def test_series_style_cycles_hatches_after_seven_colours():
    assert style.series_style(0, "bar")["color"] == style.PALETTE[0]
    assert style.series_style(7, "bar") == {"color": style.PALETTE[0], "hatch": "///", "edgecolor": "white"}
    assert style.series_style(8, "scatter")["marker"] == "s"


def test_write_table_writes_csv_and_latex(tmp_path):
    frame = pd.DataFrame({"model": ["a", "b"], "ppl": [1.234, 5.0]})
    csv, tex = write_table(frame, tmp_path, "t", caption="A caption.")
    assert pd.read_csv(csv).equals(frame)
    assert "\\caption{A caption.}" in tex.read_text() and "1.23" in tex.read_text()


def test_selection_explorer_renders_its_default(sim):
    pytest.importorskip("ipywidgets")
    curves = CURVES.assign(layers=CURVES.k.map(lambda k: list(range(1, k + 1))), units=CURVES.k.map(lambda k: list(range(1, k + 1))),
                           sublayers=[[]] * len(CURVES))
    best = pd.DataFrame({"k": [1, 2], "strategy": ["sleb", "sleb"]})
    assert pruning.selection_explorer(curves, sim, 20.0, best, 2) is not None
    plt.close("all")


def test_pareto_front_keeps_only_undominated_models():
    x, y = np.array([3.0, 1.0, 2.0, 4.0]), np.array([2.0, 1.0, 0.5, 2.5])
    assert evaluation._pareto_front(x, y).tolist() == [1, 0, 3]
