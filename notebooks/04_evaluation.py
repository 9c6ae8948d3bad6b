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
profile = "default"  # "default" (2 CPU cores, 20 items per task), "smoke" (tests) or "thesis" (every item; a GPU)
model = ""  # the unpruned reference: registry name, local folder or GGUF file; empty: the profile's (smollm2-135m)
corpus = ""  # corpus for perplexity and KL (its eval split); empty: wiki-leads
metric = "acc_norm"  # accuracy in the table and figures: "acc" or "acc_norm" (per-character normalised)
overrides = {}  # single settings, e.g. {"evaluation.tasks.limit": 100}; see frankenllama.stages.profiles

# %% [markdown]
# # 04 · What the pruned and healed models kept, lost and gained
#
# Perplexity alone hides what depth pruning breaks: question-answering accuracy can collapse while
# perplexity drifts smoothly (Gromov et al. 2024), and generations start to repeat themselves even
# when accuracy looks fine. This notebook compares the unpruned model with every variant that
# notebooks 02 (pruning) and 03 (healing) stored:
#
# * **zero-shot accuracy** on eight multiple-choice benchmarks, by log-likelihood of each choice
#   (`acc`, and `acc_norm` normalised by the choice's length in characters, as lighteval and
#   lm-eval-harness do); prompts are documented in `frankenllama.eval.tasks.TASKS`;
# * **fidelity** to the original: KL divergence and top-1 next-token agreement on held-out text,
#   and greedy generations side by side with their repeated-3-gram fraction;
# * **efficiency**: parameters, size, peak memory, prefill and decode throughput at batch 1 and 8,
#   timed side by side with the original in one run, against the ideal speed-up L/(L−k).
#
# Every model's results are cached by configuration: a re-run, or a run after adding one variant,
# only computes what is new.

# %%
import pandas as pd
from IPython.display import Markdown, display

from frankenllama.eval.tasks import TASKS
from frankenllama.figures.evaluation import difference_explorer, pareto_figure, retention_figure
from frankenllama.figures.style import set_style
from frankenllama.figures.tables import write_table
from frankenllama.paths import figures_dir
from frankenllama.stages.evaluation import comparison_table, evaluation_stage, variants_to_compare
from frankenllama.stages.profiles import build

set_style()
run = build(profile, model=model, corpus=corpus, overrides=overrides)
out = figures_dir(run.name == "smoke")
config = run.evaluation
task_names, limit = config.tasks.tasks, config.tasks.limit
print("variants:", [v.name for v in variants_to_compare(config)] or "none yet (run notebooks 02 and 03)")
stage = evaluation_stage(config)

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
# retained; held-out perplexity; KL divergence (nats/token) and top-1 agreement with the original;
# size; and the speed-up of prefill and decode over the original, next to the ideal L/(L−k).

# %%
table = comparison_table(stage, metric)
write_table(table.reset_index(), out, "final_comparison", caption=f"Final comparison ({metric}, {limit or 'all'} items per task).")
if limit:
    display(Markdown(
        f"With {limit} items per task, one task's accuracy has a standard error of up to {50 / limit**0.5:.0f} points and "
        f"the average over {len(task_names)} tasks about {50 / (limit * len(task_names))**0.5:.0f}: differences below that "
        "are noise, and per-task retention can exceed 100 %. For the thesis table run the `thesis` profile (every item: "
        "hours on a CPU, minutes on a GPU)."))
table.round(2)

# %% [markdown]
# ## Accuracy against size and latency
# The dashed line joins the Pareto front: no other model is both smaller (or faster) and more accurate.

# %%
fig = pareto_figure(table, out)

# %% [markdown]
# ## What each task kept
# Accuracy of each variant as a share of the original's, per task (100 % = nothing lost).

# %%
fig = retention_figure(table, out)

# %% [markdown]
# ## Explorer: what each variant gained or lost, task by task
# Pick a variant and the accuracy metric: its accuracy minus the original's on every task, with 95 %
# intervals from the per-task standard errors (unpaired: no per-item results are stored yet).

# %%
difference_explorer(stage, metric)

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
