"""Figures of notebook 01 (layer similarity): angular distance, Block Influence, cosine similarity.

Each figure function builds one figure from a ``LayerSimilarity`` and saves it through
``frankenllama.figures.style.save_figure``. Block Influence is Men et al. 2024 (ShortGPT,
arXiv:2403.03853); the angular distance d(ℓ, n) is Gromov et al. 2024 (arXiv:2403.17887).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from frankenllama.figures.style import COLUMN_WIDTH, PALETTE, SEQUENTIAL_CMAP, TEXT_WIDTH, save_figure
from frankenllama.similarity import LayerSimilarity


def draw_cosine(ax: plt.Axes, similarity: LayerSimilarity):
    """Draw the mean cosine similarity of every pair of residual states on ``ax``; return the image."""
    return ax.imshow(similarity.cosine, origin="lower", cmap=SEQUENTIAL_CMAP, vmin=min(0.0, similarity.cosine.min()), vmax=1)


def draw_block_influence(ax: plt.Axes, bi: np.ndarray, color) -> None:
    """Bars of Block Influence per layer on a log scale (the first and last blocks dominate)."""
    ax.bar(np.arange(len(bi)), bi, color=color, width=0.8)
    ax.set_yscale("log")


def angular_heatmap(
    similarity: LayerSimilarity,
    out_dir: Path,
    name: str = "angular_distance",
    tokens: str = "last",
    highlight: Sequence[int] | None = None,
) -> plt.Figure:
    """Heatmap of d(ℓ, n): start layer ℓ (rows) vs block size n (columns), with each column's minimum marked.

    ``highlight`` (a contiguous run of layers) is outlined, e.g. the block a strategy removes.
    """
    D = similarity.angular_distance(tokens)  # (L, L), NaN where ℓ + n > L
    L = similarity.num_layers
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH * 0.6, TEXT_WIDTH * 0.5))
    im = ax.imshow(np.ma.masked_invalid(D), origin="lower", cmap=SEQUENTIAL_CMAP, aspect="auto",
                   extent=(0.5, L + 0.5, -0.5, L - 0.5))
    best = np.nanargmin(np.where(np.isnan(D), np.inf, D), axis=0)  # best start ℓ per block size
    ax.plot(np.arange(1, L + 1), best, "o", ms=2.5, color="white", mec="black", mew=0.4, label="argmin$_\\ell$ d(ℓ, n)")
    if highlight:
        start, n = min(highlight), len(highlight)
        ax.add_patch(plt.Rectangle((n - 0.5, start - 0.5), 1, 1, fill=False, ec=PALETTE[3], lw=1.5))
    ax.set_xlabel("block size n (layers)")
    ax.set_ylabel("start layer ℓ")
    ax.legend(loc="upper right", fontsize="small")
    fig.colorbar(im, ax=ax, label=f"angular distance d(ℓ, n) ({tokens} token{'s' if tokens == 'all' else ''})")
    save_figure(fig, name, out_dir)
    return fig


def block_influence_bars(similarity: LayerSimilarity, out_dir: Path, name: str = "block_influence") -> plt.Figure:
    """Block Influence per layer (log scale: the first and last blocks dominate)."""
    bi = similarity.block_influence
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH * 0.6, 2.4))
    draw_block_influence(ax, bi, PALETTE[0])
    ax.set_xlabel("layer ℓ")
    ax.set_ylabel("Block Influence $1-\\cos(x_\\ell, x_{\\ell+1})$")
    ax.set_xlim(-0.7, len(bi) - 0.3)
    save_figure(fig, name, out_dir)
    return fig


def cosine_matrix(similarity: LayerSimilarity, out_dir: Path, name: str = "cosine_similarity") -> plt.Figure:
    """Mean cosine similarity between every pair of residual states x_0 … x_L."""
    L = similarity.num_layers
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH * 1.3, COLUMN_WIDTH * 1.1))
    im = draw_cosine(ax, similarity)
    ax.set_xlabel("residual state $x_j$ (input of layer j; $x_L$ = last output)")
    ax.set_ylabel("residual state $x_i$")
    ticks = np.arange(0, L + 1, 5)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    fig.colorbar(im, ax=ax, label="mean cosine similarity")
    save_figure(fig, name, out_dir)
    return fig
