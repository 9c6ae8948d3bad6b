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
profile = "default"  # "default" (2 CPU cores: the study's variants, 50 items of 3 tasks), "smoke" (tests) or "thesis" (every item; a GPU)
model = ""  # the unpruned reference: registry name, local folder or GGUF file; empty: the profile's (smollm2-135m)
corpus = ""  # in-domain corpus for perplexity and KL (its eval split); empty: wiki-leads
metric = "acc_norm"  # accuracy in the table and figures: "acc" or "acc_norm" (per-character normalised)
overrides = {}  # single settings, e.g. {"evaluation.tasks.limit": 300}; see frankenllama.stages.profiles

# %% [markdown]
# # 04 · What the pruned and healed models kept, lost and gained
#
# Perplexity alone hides what depth pruning breaks: question-answering accuracy can collapse while
# perplexity drifts smoothly (Gromov et al. 2024), and generations start to repeat themselves even
# when accuracy looks fine. This notebook compares the unpruned model with the variants of the study:
# notebook 02's best whole-block cut at k = `heal_k`, unhealed, and notebook 03's healed versions of it
# (the `thesis` profile compares every stored variant on every item):
#
# * **zero-shot scores on the same items for every model**, by log-likelihood of each choice: `acc`,
#   `acc_norm` (normalised by the choice's length in characters, as lighteval and lm-eval-harness do),
#   and two low-noise continuous scores (OLMES; AI2's DataDecide, 2025): the gold answer's bits per
#   byte (`gold_bpb`) and the gold choice's probability normalised over the choices
#   (`gold_prob_norm`); prompts are documented in `frankenllama.eval.tasks.TASKS`;
# * **perplexity in two domains**: in-domain (the eval split of the healing corpus, wiki-leads) and
#   out-of-domain (the eval split of `olmo-passages`, text no stage trains or calibrates on);
# * **fidelity** to the original: KL divergence and top-1 next-token agreement on held-out text,
#   and greedy generations side by side with their repeated-3-gram fraction;
# * **efficiency**: parameters, size, peak memory, prefill and decode throughput at batch 1 and 8,
#   timed side by side with the original in one run, against the ideal speed-up L/(L−k).
#
# **Evidence.** Every comparison is *paired*: each variant minus the original on the same items (or
# text blocks), with a 95 % paired bootstrap interval (items resampled within tasks; McNemar's exact
# test for accuracy). A difference is called real only where its interval excludes 0; the sentences
# below are generated from the tables. Every model's results are cached by configuration: a re-run, or
# a run after adding one variant, only computes what is new.

# %%
import pandas as pd
from IPython.display import Markdown, display

from frankenllama.eval.tasks import TASKS
from frankenllama.figures.evaluation import difference_explorer, pareto_figure, retention_figure
from frankenllama.figures.style import set_style
from frankenllama.figures.tables import write_table
from frankenllama.paths import figures_dir
from frankenllama.stages.evaluation import (BASELINE, comparison_table, evaluation_config, evaluation_stage, paired_perplexity_table,
                                            paired_sentences, paired_table, sizing_check, unhealed_variant, variants_to_compare)
from frankenllama.stages.profiles import build

set_style()
run = build(profile, model=model, corpus=corpus, overrides=overrides)
out = figures_dir(run.name == "smoke")
config = evaluation_config(run)
task_names, limit = config.tasks.tasks, config.tasks.limit
print("variants:", [v.name for v in variants_to_compare(config)] or "none yet (run notebooks 02 and 03)")
stage = evaluation_stage(config)
domains = f"in-domain = {config.corpus} eval split" + (f", out-of-domain = {config.ood_corpus} eval split" if config.ood_corpus else "")

# %% [markdown]
# ## The prompts
# Each benchmark's context and choices (the continuation scored after the context).

# %%
pd.DataFrame(
    [{"task": n, "benchmark": TASKS[n].title, "split": TASKS[n].split, "prompt": TASKS[n].prompt, "source": TASKS[n].citation}
     for n in task_names if n in TASKS]
).set_index("task")  # fmt: skip

# %% [markdown]
# ## The final comparison
# Accuracy in % (`metric`), its average over tasks and the share of the original's average that is
# retained; perplexity in domain and out of domain; KL divergence (nats/token) and top-1 agreement
# with the original; size; and the speed-up of prefill and decode over the original, next to the ideal
# L/(L−k). The paired tables below say which of these differences the items support.

# %%
table = comparison_table(stage, metric)
write_table(table.reset_index(), out, "final_comparison",
            caption=f"Final comparison ({metric}, {limit or 'all'} items per task, the same items for every model; {domains}).")
table.round(2)

# %% [markdown]
# ## Paired differences to the original
# For each score, every variant minus the original on the same items: the macro average over tasks
# (`diff`; points for `acc_norm` and `gold_prob_norm`, bits per byte for `gold_bpb`, where lower is
# better), its 95 % paired bootstrap interval (`low`, `high`) and half-width, "% retained" with its
# interval, and McNemar's exact p-value for `acc_norm`.

# %%
paired = {m: paired_table(stage, m) for m in ("gold_bpb", "gold_prob_norm", "acc_norm")}
paired_all = pd.concat(paired, names=["metric"]).reset_index()
write_table(paired_all, out, "paired_vs_original", caption=f"Each model minus the original on the same items ({limit or 'all'} "
            "per task): macro mean over tasks, 95 % paired bootstrap interval, % retained with its interval, McNemar p (acc_norm).")
for m, t in paired.items():
    display(Markdown(f"**{m}**"), t.round(4 if m == "gold_bpb" else 2))

# %% [markdown]
# What the items support, in sentences generated from the tables above:

# %%
display(Markdown("\n".join(f"* {line}" for m in paired for line in paired_sentences(paired[m], m))))

# %% [markdown]
# ## Perplexity, paired over text blocks
# Each model's perplexity as a multiple of the original's on the same blocks, with a 95 % paired
# bootstrap interval over blocks, in domain and out of domain.

# %%
ppl = {d: paired_perplexity_table(stage, d) if d == "in" or config.ood_corpus else None for d in ("in", "out")}
ppl_all = pd.concat({d: t for d, t in ppl.items() if t is not None}, names=["domain"]).reset_index()
write_table(ppl_all, out, "paired_perplexity", caption=f"Perplexity and its ratio to the original's on the same "
            f"{config.ppl_blocks} blocks of {config.block_len} tokens ({domains}); 95 % paired bootstrap interval over blocks.")
for line in (f"{r.model} ({'in-domain' if r.domain == 'in' else 'out-of-domain'}): perplexity {r.ppl:.2f} = {r.ppl_ratio:.2f}× the original's "
             f"[{r.ratio_low:.2f}, {r.ratio_high:.2f}]" + ("" if r.significant else ", not distinguishable from 1")
             for r in ppl_all.itertuples() if r.model != BASELINE):
    print(line)

# %% [markdown]
# ## Are there enough items?
# A recipe that wins back a third of the unhealed model's loss is visible only if the paired interval
# of the continuous scores is at most a third of that loss wide (half-width). Computed from the tables:

# %%
unhealed = unhealed_variant(stage)
if unhealed is None:
    print("no unhealed variant (notebook 02's best cut) among the compared models: no sizing check")
else:
    for m in ("gold_bpb", "gold_prob_norm"):
        c = sizing_check(paired[m], unhealed, m)
        print(f"{m}: widest half-width {c['half_width']:.4f} vs a third of {unhealed}'s loss {c['loss']:.4f} / 3 = "
              f"{c['limit']:.4f}: {'yes' if c['ok'] else 'no'}, the items {'suffice' if c['ok'] else 'do not suffice'}")

# %% [markdown]
# ## Accuracy and perplexity against size and latency
# The dashed line joins the Pareto front: no other model is both smaller (or faster) and more accurate.
# Error bars: 95 % paired intervals of each variant's difference to the original (accuracy, over items)
# and of its perplexity ratio (over blocks), in domain and out of domain. Variants of the same size are
# drawn a few points apart sideways so that their bars stay apart (their x values are all the same).

# %%
fig = pareto_figure(table, out, paired=paired_table(stage, metric), ppl=ppl, metric=metric)

# %% [markdown]
# ## What each task kept
# Accuracy of each variant as a share of the original's, per task (100 % = nothing lost).

# %%
fig = retention_figure(table, out)

# %% [markdown]
# ## Explorer: what each variant gained or lost, task by task
# Pick a variant and a score: its paired difference to the original on every task and on average,
# with 95 % paired bootstrap intervals over the same items (from the cached per-item results).

# %%
difference_explorer(stage)
# %% [markdown]
# ## Both accuracies of the original
# `acc` picks the choice of highest total log-likelihood, `acc_norm` the highest per character.

# %%
original = pd.DataFrame(stage["results"]["original"]["tasks"]).T[["n", "acc", "acc_norm", "acc_stderr", "chance"]]
write_table(original.reset_index(names="task"), out, "original_accuracy", caption="Zero-shot accuracy of the unpruned model.")
original

# %% [markdown]
# ## Size, memory and speed, measured side by side

# %%
speed = pd.DataFrame(stage["speed"]).set_index("model")
write_table(speed.reset_index(), out, "efficiency", caption="Size, peak memory and throughput (tokens/s), side by side.")
speed.round(3).T

# %% [markdown]
# ## Greedy generations side by side
# Depth pruning tends to make generations loop; the repeated-3-gram fraction counts it.

# %%
generations = pd.DataFrame(stage["generations"])
display(generations.groupby("model")[["tokens", "repeated_3gram"]].mean().round(3))
for prompt, rows in generations.groupby("prompt", sort=False):
    display(Markdown(f"**{prompt}**\n\n" + "\n\n".join(f"*{r.model}*: {r.text}" for r in rows.itertuples())))
