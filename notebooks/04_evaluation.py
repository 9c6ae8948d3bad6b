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
model = "smollm2-135m"  # registry name, local transformers folder or GGUF file (the unpruned reference)
tasks = "arc_easy,arc_challenge,hellaswag,piqa,winogrande,boolq,openbookqa,sciq"  # comma-separated task names or .jsonl paths
limit = 20  # items per task, drawn with `seed`; 0 for all items; about 0.3 s an item on 2 idle cores
chat_template = True  # score choices as the assistant's reply, as the published SmolLM2-Instruct numbers do
metric = "acc_norm"  # accuracy in the table and figures: "acc" or "acc_norm" (per-character normalised)
corpus = "wiki-leads"  # corpus for perplexity and KL (its eval split)
block_len = 256  # tokens per eval block
ppl_blocks = 8  # eval blocks for perplexity
fidelity_blocks = 4  # eval blocks for KL / top-1 agreement against the original
prompt_len = 64  # prompt tokens when timing prefill and decode
new_tokens = 16  # decode steps timed
speed_repeats = 3  # interleaved repetitions of every timing
speed_threads = 1  # torch threads while timing, 1 is steadiest when the cores are shared; 0 leaves them as they are
max_new_tokens = 40  # tokens of each side-by-side greedy generation
variant_prefix = ""  # compare only variants whose name starts with this; empty for every variant
seed = 0  # seed of the item sample and of the stage
smoke = False  # small, fast profile for tests and CI (~1-2 min)

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
#   lm-eval-harness do); prompts are documented in `frankenllama.tasks.TASKS`;
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

from frankenllama.efficiency import SpeedConfig
from frankenllama.evaluation import (
    EvaluationConfig,
    comparison_table,
    evaluation_stage,
    pareto_figure,
    retention_figure,
    variants_to_compare,
)
from frankenllama.paths import figures_dir
from frankenllama.plotting import set_style
from frankenllama.tables import write_table
from frankenllama.tasks import TASKS, TaskEvalConfig

task_names = tuple(t.strip() for t in tasks.split(",") if t.strip())
batch_sizes = (1, 8)
if smoke:
    task_names, limit, block_len, ppl_blocks, fidelity_blocks = ("arc_easy", "piqa"), 4, 64, 2, 1
    prompt_len, new_tokens, speed_repeats, max_new_tokens, batch_sizes = 16, 3, 1, 8, (1, 2)
set_style()
out = figures_dir(smoke)
config = EvaluationConfig(
    model=model,
    tasks=TaskEvalConfig(task_names, limit=limit or None, seed=seed, chat_template=chat_template),
    corpus=corpus,
    block_len=block_len,
    ppl_blocks=ppl_blocks,
    fidelity_blocks=fidelity_blocks,
    speed=SpeedConfig(batch_sizes, prompt_len, new_tokens, speed_repeats, warmup=0 if smoke else 1,
                      threads=speed_threads or None),
    max_new_tokens=max_new_tokens,
    variant_prefix="smoke-" if smoke else variant_prefix,
    exclude_prefix=None if smoke else "smoke-",
    max_variants=1 if smoke else None,
    seed=seed,
)  # fmt: skip
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
        "are noise, and per-task retention can exceed 100 %. For the thesis table run with `limit = 0` (every item: hours "
        "on a CPU, minutes on a GPU)."))
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
