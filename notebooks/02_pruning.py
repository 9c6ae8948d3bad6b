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
profile = "default"  # "default" (2 CPU cores, ~7 min), "smoke" (tests) or "thesis" (every k, exact searches; a GPU)
model = ""  # registry name, local transformers folder or GGUF file; empty: the profile's (smollm2-135m)
corpus = ""  # corpus name or path to a text file; empty: wiki-leads
overrides = {}  # single settings, e.g. {"pruning.eval_data.n_blocks": 32, "study.n_boot": 2000}; see frankenllama.stages.profiles

# %% [markdown]
# # 02 · Which layers to remove
#
# Cheap similarity proxies — ShortGPT's Block Influence and Gromov et al.'s angular distance — are
# what most depth-pruning tools use, yet they are known to mis-rank layers. Here every serious way
# of choosing what to remove is measured on the real model, without healing:
#
# * **true scores** on the calibration split: the increase of the calibration loss (ΔNLL, ΔPPL)
#   and the KL divergence to the full model when one layer alone is removed; Taylor importance
#   Σ|w·∂L/∂w| (Kim et al. 2024); and the proxies (BI, angular distance);
# * **strategies** (one registry): top-k by any score, the best contiguous block, reverse order
#   (Lu et al. 2024), iterative greedy removal (SLEB, Song et al. 2024), a multi-start swap search,
#   and sub-layer pruning of attention and MLP sub-blocks separately (BlockPruner, Zhong et al.
#   2024; `part-swap`, which trades the attention of a removed block for a redundant one elsewhere);
# * **the study**: pruning curves on held-out text, the rank correlation of each proxy with the
#   true one-layer-out ΔPPL (with confidence intervals), and how stable each strategy's choice is.
#
# Everything expensive is computed once into config-keyed caches; this notebook reads them.

# %%
import pandas as pd
from IPython.display import Markdown, display

from frankenllama.budget import Budget, count_params, fit_budget, unit_params
from frankenllama.figures import pruning as figures
from frankenllama.figures.style import set_style
from frankenllama.figures.tables import write_table
from frankenllama.paths import figures_dir
from frankenllama.selection import methods_table
from frankenllama.stages import (
    best_strategies,
    best_summary,
    pruning_stage,
    save_pruned_variants,
    scoring_context,
    study_stage,
)
from frankenllama.stages.profiles import build

set_style()
run = build(profile, model=model, corpus=corpus, overrides=overrides)
out = figures_dir(run.name == "smoke")
config = run.pruning
strategies = config.strategies
curves = pruning_stage(config)
baseline = float(curves.loc[curves.k == 0, "eval_ppl"].iloc[0])
print(f"unpruned eval perplexity {baseline:.2f}; {len(strategies)} strategies at k = {config.ks}")

# %% [markdown]
# ## The methods compared
# Every strategy and score of the registries, what it does and where it comes from.

# %%
methods = methods_table()
write_table(methods, out, "methods", caption="Selection strategies and scores compared, with their sources.")
methods

# %% [markdown]
# ## Pruning curves: held-out perplexity vs layers removed
# Sub-layer strategies remove attention / MLP sub-blocks until the model is no larger than the model
# with k whole layers removed, so every point of a column has (about) the same parameter count.

# %%
fig = figures.pruning_curves(curves, out, baseline=baseline)

# %%
table = curves[curves.k > 0].pivot(index="strategy", columns="k", values="eval_ppl").loc[list(strategies)]
write_table(table.reset_index(), out, "pruning_curve_ppl", caption="Eval perplexity after removing k layers (no healing).")
write_table(curves.assign(layers=curves.layers.map(lambda l: " ".join(map(str, l))),
                          units=curves.units.map(lambda l: " ".join(map(str, l))),
                          sublayers=curves.sublayers.map(" ".join)), out, "pruning_curve",
            caption="Every pruning-curve point: strategy, k, removed units, eval perplexity.")
table.round(1)

# %% [markdown]
# ## Which layers each strategy removes

# %%
chosen = curves[curves.k > 0].assign(
    removed=lambda d: [" ".join(s) if g == "sublayer" else " ".join(map(str, l))
                       for g, l, s in zip(d.granularity, d.layers, d.sublayers)])
chosen.pivot(index="strategy", columns="k", values="removed").loc[list(strategies)]

# %% [markdown]
# ## The best strategy against the published criteria

# %%
best = best_strategies(curves, granularity=None)
write_table(best.assign(layers=best.layers.map(lambda l: " ".join(map(str, l))), units=best.units.map(len),
                        tied_with=best.tied_with.map(" ".join)), out, "best_strategy",
            caption="Best strategy at each k on held-out eval perplexity (sub-layer strategies at the parameter "
                    "count of k removed layers), and its margin over BI and angular-block.")
display(Markdown("**Any granularity, at the parameter count of k removed layers:**\n\n" + best_summary(best)))
display(Markdown("**Whole layers removed:**\n\n" + best_summary(best_strategies(curves))))
best.drop(columns=["units"]).round(2)

# %% [markdown]
# The best strategy is chosen on held-out perplexity here, after the fact; each strategy itself saw
# only the calibration split. How the winners are measured (the true score, the greedy search) is
# what the study below explains. `swap-search` starts from the best of several strategies' choices
# on the calibration loss and swaps blocks while that loss drops: where it ends on the very run that
# angular-block picks, that run is a local optimum of the calibration loss among whole blocks.
# `part-swap` goes one level finer at the same size: a removed block's attention may matter while a
# kept block's attention is nearly idle (He et al. 2024), so it puts the one back and removes the
# other, keeping as many attention and MLP sub-blocks removed as the k whole blocks had.

# %% [markdown]
# ## Every score per layer
# Rank-normalised importances (1 = most important). The proxies (BI, angular) and the true
# one-layer-out damage disagree most about the deep layers.

# %%
ctx = scoring_context(config)
scan = ctx.scan()
scores = pd.DataFrame({name: ctx.score(name) for name in
                       ("ablation-ppl", "ablation-kl", "taylor", "block-influence", "angular", "angular-all")})
scores.index.name = "layer"
fig = figures.score_profiles(scores, out)
scores.T.round(3)

# %% [markdown]
# ## How well do the cheap proxies track the truth?
# Spearman's ρ between each proxy and the one-layer-out ΔPPL on the calibration blocks. Intervals:
# percentile bootstrap over calibration blocks; Taylor (not a sum over samples) gets a delete-one
# jackknife interval.

# %%
study = study_stage(run.study)
correlation = study["correlation"]
write_table(correlation, out, "proxy_vs_truth", caption="Spearman rank correlation of each proxy with one-layer-out ΔPPL.")
fig = figures.proxy_correlation(correlation, out)
correlation.round(3)

# %% [markdown]
# ## How stable is each strategy's choice?
# Calibration subsets of a few blocks, drawn at random (the seed is which blocks); the overlap
# (Jaccard) of each strategy's choice with its choice on all calibration blocks, and between draws.

# %%
stability = study["stability"]
write_table(stability, out, "selection_stability", caption="Stability of each strategy's choice across calibration subsets.")
fig = figures.stability(stability, out)
stability.pivot_table(index="strategy", columns=["k", "size"], values="jaccard_with_full").round(2)

# %% [markdown]
# ## Pruning to a budget
# The configuration each strategy finds under a size target: here the bytes of the model at
# bfloat16 with about a fifth of its blocks removed.

# %%
full = count_params(ctx.model)
target = Budget(bytes=int((full - 0.2 * unit_params(ctx.model, "layer").sum()) * 2), dtype="bfloat16")
fits = [fit_budget(ctx, target, s) for s in ("sleb", "block-influence", "sublayer-nll")]
pd.DataFrame([{"strategy": f.strategy, "removed units": f.k, "kept layers": f.kept_layers,
               "params (M)": f.num_params / 1e6, "MiB at bf16": f.num_bytes / 2**20} for f in fits]).round(2)

# %% [markdown]
# ## Variants for healing and evaluation
# The best strategy's pruned model at the k that notebook 03 heals (and block-influence and angular-block for comparison),
# saved as variants that notebooks 03 and 04 load.

# %%
if run.name != "smoke":
    print(save_pruned_variants(config, ks=(run.heal_k,)))

# %% [markdown]
# ## Explorer
# Pick a strategy and k: the removed layers on the residual-stream similarity and the eval perplexity
# (from the cached results; nothing is recomputed).

# %%
figures.selection_explorer(curves, ctx.similarity, baseline, best, run.heal_k)
