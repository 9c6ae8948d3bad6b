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
profile = "default"  # "default" (2 CPU cores, ~13 min), "smoke" (tests) or "thesis" (every item, 64k tokens; a GPU)
model = ""  # registry name, local transformers folder or GGUF file; empty: the profile's (smollm2-135m)
corpus = ""  # in-domain corpus (train / calib / eval splits); empty: wiki-leads
overrides = {}  # single settings, e.g. {"recipe.healing.tokens": 8192, "recipe.ours": ["swap-search", "kd-lora"]}

# %% [markdown]
# # 05 · The FrankenLLaMA recipe against the peers' complete pipelines
#
# Each peer's **whole pipeline** — its selection and its healing, as its paper runs it — against
# the FrankenLLaMA recipe, on the same model, at the **same parameter count** (10, 20 and 30 % of the
# decoder's parameters removed) and with the **same training-token budget** for every trained pipeline
# (and LoRA adapters of the same rank, the recipe's, for every LoRA pipeline):
#
# | pipeline | selection | healing |
# |---|---|---|
# | `shortgpt` | Block Influence (Men et al. 2024) | LoRA |
# | `gromov` | angular distance, contiguous run, last token (Gromov et al. 2024) | LoRA on the MLPs |
# | `sleb` | SLEB's iterative greedy (Song et al. 2024) | none |
# | `replaceme` | cosine distance, contiguous run, all tokens (Shopkhoev et al. 2025) | least-squares linear patch (training-free) |
# | `lu` | reverse order (Lu et al. 2024) | fine-tuning of the last 3 blocks and the LM head |
# | `frankenllama` | the profile's `recipe.ours` (default: `part-swap`) | its recipe (default: `linear-patch+kd-lora`) |
#
# Every model is measured on the **same** text and items as the original, and every comparison is
# paired: perplexity per eval block in two domains — in-domain (wiki-leads eval split, the domain
# the healing trains on) and out-of-domain (olmo-passages, never used to calibrate or heal) — and
# zero-shot items scored by notebook 04's evaluator (the gold answer's bits per byte, a continuous
# score that needs far fewer items, and acc_norm). The text below is generated from the table: it
# calls a difference real only where its 95 % interval excludes "no difference".

# %%
from IPython.display import Markdown, display

from frankenllama.figures.recipe import recipe_explorer, study_figure
from frankenllama.figures.style import set_style
from frankenllama.figures.tables import write_table
from frankenllama.paths import figures_dir
from frankenllama.stages.recipe import recipe_stage, study_summary, study_table
from frankenllama.stages.profiles import build

set_style()
run = build(profile, model=model, corpus=corpus, overrides=overrides)
out = figures_dir(run.name == "smoke")
config = run.recipe
display(Markdown(
    f"Profile `{run.name}`: {config.healing.tokens:,} training tokens per trained pipeline "
    f"({config.healing.tokens // (config.healing.batch_size * config.healing.block_len)} steps of "
    f"{config.healing.batch_size} × {config.healing.block_len}), {config.healing.patch_tokens:,} calibration tokens "
    f"for the linear patch, LoRA rank {config.healing.lora_rank} for every LoRA pipeline; perplexity on {config.evaluation.ppl_blocks} blocks of {config.evaluation.block_len} "
    "tokens per domain; "
    f"zero-shot on {config.evaluation.tasks.limit or 'all'} items of {', '.join(config.evaluation.tasks.tasks)} "
    f"at {'every ratio' if config.zero_shot_ks is None else f'k = {list(config.zero_shot_ks)} blocks worth'}. "
    "The default profile cuts sizes, not pairing: fewer tokens, blocks and items (and zero-shot at one ratio) than "
    "the `thesis` profile, so its intervals are wider; every number below carries its interval."))
config

# %% [markdown]
# ## Run every pipeline at every ratio
# Selections come from notebook 02's cached pruning curves (sub-layer strategies at the parameter
# count of k removed blocks); each healed model is saved as variant `recipe-<percent>-<pipeline>`
# and read back on a re-run.

# %%
study = recipe_stage(config)
study.runs[["percent", "pipeline", "strategy", "recipe", "removed", "params_M", "train_tokens", "calib_tokens", "wall_s"]]

# %% [markdown]
# ## The table
# Perplexity in both domains and its ratio to the original's (`_x`, with `_low`/`_high`: 95 % paired
# bootstrap over eval blocks) and to the recipe's at the same ratio (`_vs_ours_x`); zero-shot
# differences to the original (`_orig`) and to the recipe (`_ours`): `bpb` = gold answer bits per
# byte (lower is better), `acc_norm` in points; wall time = selection + healing, in seconds. The
# selection time is notebook 02's, for all of its k's, and a measurement shared by several strategies
# (the similarity pass, the greedy run) is charged to the first that needed it: read it as an order
# of magnitude. `recipe` is the recipe as it ran: the linear patch folds into the last projection of
# the block before a removed run (its MLP's, or its attention's where a sub-layer choice removed that
# MLP), so where a choice removed no whole block (or only a run at block 0) the patch step is dropped
# and the column says so.

# %%
table = study_table(study)
write_table(table, out, "recipe_study", caption=f"The FrankenLLaMA recipe against the peers' pipelines ({config.healing.model}; "
            f"{config.healing.tokens} training tokens per trained pipeline; 95 % paired intervals).", float_format="%.3f")  # fmt: skip
table.round(3)

# %% [markdown]
# ## What the intervals support

# %%
display(Markdown(study_summary(table)))

# %% [markdown]
# ## The figure
# Perplexity ratios and zero-shot differences to the original, per ratio and pipeline,
# with 95 % paired intervals; the recipe in black.

# %%
fig = study_figure(table, out)

# %% [markdown]
# ## Explorer
# Pick a pipeline and a removal ratio: its paired differences to the original and to the recipe,
# with intervals (from the table above; nothing is recomputed).

# %%
recipe_explorer(table)
