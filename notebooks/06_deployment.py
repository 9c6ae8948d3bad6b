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
profile = "default"  # "default" (2 CPU cores, ~2 min after notebook 05), "smoke" (tests) or "thesis" (512-token blocks, more of them)
model = ""  # registry name or local transformers folder; empty: the profile's (smollm2-135m)
corpus = ""  # in-domain corpus (its eval split); empty: wiki-leads. Out of domain: olmo-passages
context = 2048  # context length whose KV cache the memory budgets below must hold
pruning_table = ""  # notebook 02's pruning-curve CSV (figures/pruning_curve.csv) for the cuts; empty: its cache
overrides = {}  # single settings, e.g. {"deployment.prune_ks": [3, 6], "deployment.qtypes": ["f16", "q4_0"]}

# %% [markdown]
# # 06 · Deploying the smaller model: remove blocks or quantize harder?
#
# The thesis motivates depth pruning with models that run locally on constrained hardware, which in
# practice means llama.cpp and everything built on it (ollama, LM Studio, phones, single-board
# computers). There a reader asks first: *at the same number of bytes, is it better to remove blocks
# or to quantize harder?*
#
# For each removal — 0, 10, 20 and 30 % of the decoder (k = 0, 3, 6, 9 of SmolLM2's 30 blocks) — two
# models: the best whole-block cut of notebook 02 at that k, unhealed, and the FrankenLLaMA recipe at
# the same size as notebook 05 made it (its own cut, part-swap's blocks and sub-blocks, then the linear
# patch and distillation into LoRA: what `python -m frankenllama compress` makes, at notebook 05's
# budget; notebook 05's saved variants `recipe-<percent>-frankenllama` are read back, nothing is
# healed twice). For each GGUF storage type (f16, q8_0, q4_0) the model is exported
# (`frankenllama.export`; a cut with sub-blocks removed becomes a `deci` file) and run in llama.cpp:
# file size, peak memory of a fresh process, prefill and decode speed (every combination timed side by
# side in one run, best of the rounds), held-out perplexity in domain (the wiki-leads eval split) and
# out of domain (olmo-passages), and KL divergence and top-1 agreement with the original's f16 logits
# on the same blocks.

# %%
from IPython.display import Markdown, display

from frankenllama.export.budget import budget_summary
from frankenllama.figures.deployment import deployment_explorer, plot_quality_vs_bytes
from frankenllama.figures.style import set_style
from frankenllama.figures.tables import write_table
from frankenllama.paths import figures_dir, resolve_user_path
from frankenllama.stages import pruning_stage
from frankenllama.stages.deployment import deployment_stage, deployment_table, read_pruning_curves, with_best_cuts
from frankenllama.stages.profiles import build

set_style()
run = build(profile, model=model, corpus=corpus, overrides=overrides)
out = figures_dir(run.name == "smoke")
curves = read_pruning_curves(resolve_user_path(pruning_table)) if pruning_table else pruning_stage(run.pruning)
config = with_best_cuts(run.deployment, curves)
display(Markdown("\n".join(f"* k = {k}: **{s}** removes blocks {list(dict(config.removals)[k])}"
                           for k, s in config.strategies)))
config

# %% [markdown]
# ## Export, measure
# Cached: a re-run with the same settings reads the table back (and the recipe's variants: run
# notebook 05 first, or this cell heals them as notebook 05 would).

# %%
rows = deployment_stage(config)
table = deployment_table(rows)
write_table(table, out, "deployment", caption=(
    f"{config.model} in llama.cpp: blocks removed (best whole-block strategy of notebook 02), or healed: "
    f"{'the recipe of notebook 05 at the same size' if config.recipe else config.healing.recipes[0] if config.healing else 'none'}; "
    "GGUF type; perplexity on "
    f"{config.data.n_blocks}x{config.data.block_len} in-domain ({config.data.corpus}) tokens"
    + (f" and {config.ood_data.n_blocks}x{config.ood_data.block_len} out-of-domain ({config.ood_data.corpus})"
       if config.ood_data else "") + "; KL and top-1 against the original's f16 logits; speeds best of "
    f"{config.repeats} interleaved rounds, {config.threads} threads."))
shown = ["variant", "qtype", "file_bytes", "peak_rss_bytes", "ppl", "ppl_ood", "kl", "top1", "prefill_tok_s",
         "decode_tok_s"]
view = table[[c for c in shown if c in table]].assign(file_bytes=table.file_bytes / 1e6,
                                                      peak_rss_bytes=table.peak_rss_bytes / 1e6)
view.rename(columns={"file_bytes": "file MB", "peak_rss_bytes": "peak RSS MB"}).round(3)

# %% [markdown]
# ## Quality against bytes
# One line per GGUF type through k = 0, 3, 6, 9 blocks removed (solid: unhealed; dashed, open
# markers: the recipe at that size); the dotted step line is the Pareto front — no other combination is both smaller
# and better. Left in domain, right out of domain.

# %%
fig = plot_quality_vs_bytes(rows, out, name="deployment_quality_vs_bytes")

# %% [markdown]
# ## Which combination wins at each memory budget
# A model in llama.cpp holds its weights and a KV cache (F16) for its context; each line below is a
# stretch of memory budgets where one combination has the lowest held-out perplexity among those
# that fit (the Pareto front of footprint and perplexity), compared with the winner just below it on
# the same blocks (paired bootstrap over blocks, 95 % interval of the per-block NLL difference).
# `python -m frankenllama budget --memory 64MB --context 2048` answers one budget from the written table.

# %%
display(Markdown(f"**In domain** ({config.data.corpus}), context {context}:\n\n"
                 + "\n".join(budget_summary(rows, context))))
if config.ood_data is not None:
    display(Markdown(f"**Out of domain** ({config.ood_data.corpus}), context {context}:\n\n"
                     + "\n".join(budget_summary(rows, context, quality="ppl_ood"))))

# %% [markdown]
# ## Explorer: choose a model and its quantization
# The chosen combination is ringed on both panels and its configuration and measurements listed
# beside them (from the cached table; nothing is recomputed).

# %%
deployment_explorer(rows)
