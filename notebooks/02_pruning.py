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
corpus = "wiki-leads"  # corpus name or path to a text file
block_len = 256  # tokens per block (calibration and evaluation)
calib_blocks = 64  # calibration blocks, as in notebook 01 to share its cache
eval_blocks = 16  # held-out eval blocks for perplexity: 16 x 256 = 4k tokens
max_k = 12  # pruning curve from 0 to max_k removed layers
batch_size = 8  # blocks per forward pass
seed = 0  # seed set at each stage's entry
smoke = False  # small, fast profile for tests and CI

# %% [markdown]
# # 02 · Pruning
#
# Remove k blocks chosen by each strategy and measure the held-out perplexity of the pruned model
# (no healing). The similarity statistics come from notebook 01's cache.

# %%
from frankenllama.paths import figures_dir
from frankenllama.plotting import set_style
from frankenllama.stages import DataConfig, PruningConfig, SimilarityConfig, pruning_stage
from frankenllama.tables import write_table
from frankenllama import viz

if smoke:
    calib_blocks, eval_blocks, block_len, max_k = 4, 2, 64, 2
set_style()
out = figures_dir(smoke)
config = PruningConfig(
    similarity=SimilarityConfig(model, DataConfig(corpus, "calib", block_len, calib_blocks), batch_size, seed),
    eval_data=DataConfig(corpus, "eval", block_len, eval_blocks),
    ks=tuple(range(0, max_k + 1)),
    batch_size=batch_size,
    seed=seed,
)
curves = pruning_stage(config)

# %% [markdown]
# ## Eval perplexity vs layers removed

# %%
baseline = float(curves.loc[curves.k == 0, "eval_ppl"].iloc[0])
fig = viz.pruning_curves(curves, out, baseline=baseline)

# %% [markdown]
# ## Which layers each strategy removes

# %%
table = curves.pivot(index="k", columns="strategy", values="eval_ppl")
chosen = curves.pivot(index="k", columns="strategy", values="layers")
write_table(curves.assign(layers=curves.layers.map(lambda l: " ".join(map(str, l)))), out, "pruning_curve",
            caption="Eval perplexity after removing k layers without healing.")
chosen

# %%
table.round(2)
