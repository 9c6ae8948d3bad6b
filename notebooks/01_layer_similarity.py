# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: frankenllama (.venv)
#     language: python
#     name: frankenllama
# ---

# %% tags=["parameters"]
model = "smollm2-135m"  # registry name, local transformers folder or GGUF file
corpus = "wiki-leads"  # corpus name or path to a text file, documents separated by blank lines
block_len = 256  # tokens per calibration block
calib_blocks = 64  # number of calibration blocks: 64 x 256 = 16k tokens
batch_size = 8  # blocks per forward pass
seed = 0  # seed set at the stage's entry
smoke = False  # small, fast profile for tests and CI

# %% [markdown]
# # 01 · Layer similarity
#
# Which blocks of the model barely change the residual stream? We run the calibration split
# through the model once and record, for every pair of residual states $x_i, x_j$ (the input of
# block $i$ and of block $j$, with $x_L$ the output of the last block *before* the final norm):
#
# * the **Block Influence** $\mathrm{BI}_\ell = 1 - \mathbb{E}_t \cos(x_\ell, x_{\ell+1})$ of
#   ShortGPT (Men et al. 2024) — low means the block changes little;
# * the **angular distance** $d(\ell, n) = \arccos(\cos(x_\ell, x_{\ell+n}))/\pi$ between the input
#   and output of the run of $n$ blocks starting at $\ell$ (Gromov et al. 2024), on the last token;
# * the full **cosine-similarity matrix** between all residual states.

# %%
import matplotlib.pyplot as plt
import pandas as pd

from frankenllama.paths import figures_dir
from frankenllama.plotting import set_style
from frankenllama.stages import DataConfig, SimilarityConfig, similarity_stage
from frankenllama import viz

if smoke:
    calib_blocks, block_len = 4, 64
set_style()
out = figures_dir(smoke)
config = SimilarityConfig(
    model=model, data=DataConfig(corpus, "calib", block_len, calib_blocks), batch_size=batch_size, seed=seed
)
config

# %%
similarity = similarity_stage(config)
print(f"{similarity.num_layers} blocks, {similarity.n_tokens} calibration tokens in {similarity.n_sequences} blocks")

# %% [markdown]
# ## Angular distance by start layer and block size
# Dark cells are runs of blocks whose output points the same way as their input: candidates for removal.

# %%
fig = viz.angular_heatmap(similarity, out, name="angular_distance")

# %% [markdown]
# ## Block Influence per layer

# %%
fig = viz.block_influence_bars(similarity, out, name="block_influence")
pd.Series(similarity.block_influence, name="BI").rename_axis("layer").to_frame().T.round(3)

# %% [markdown]
# ## Cosine similarity between residual states

# %%
fig = viz.cosine_matrix(similarity, out, name="cosine_similarity")
