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
profile = "default"  # "default" (2 CPU cores), "smoke" (tests, a minute) or "thesis" (larger budgets, for a GPU)
model = ""  # registry name, local transformers folder or GGUF file; empty: the profile's (smollm2-135m)
corpus = ""  # corpus name or path to a text file, documents separated by blank lines; empty: wiki-leads
overrides = {}  # single settings of the profile, e.g. {"similarity.data.n_blocks": 128}; see frankenllama.stages.profiles

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
import pandas as pd

from frankenllama.figures import similarity as figures
from frankenllama.figures.style import set_style
from frankenllama.paths import figures_dir
from frankenllama.stages import similarity_stage
from frankenllama.stages.profiles import build

set_style()
run = build(profile, model=model, corpus=corpus, overrides=overrides)
out = figures_dir(run.name == "smoke")
config = run.similarity
config

# %%
similarity = similarity_stage(config)
print(f"{similarity.num_layers} blocks, {similarity.n_tokens} calibration tokens in {similarity.n_sequences} blocks")

# %% [markdown]
# ## Angular distance by start layer and block size
# Dark cells are runs of blocks whose output points the same way as their input: candidates for removal.

# %%
fig = figures.angular_heatmap(similarity, out, name="angular_distance")

# %% [markdown]
# ## Block Influence per layer

# %%
fig = figures.block_influence_bars(similarity, out, name="block_influence")
pd.Series(similarity.block_influence, name="BI").rename_axis("layer").to_frame().T.round(3)

# %% [markdown]
# ## Cosine similarity between residual states

# %%
fig = figures.cosine_matrix(similarity, out, name="cosine_similarity")
