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
profile = "default"  # "default" (2 CPU cores, 8k tokens per recipe), "smoke" (tests) or "thesis" (262k tokens; a GPU)
model = ""  # registry name, local transformers folder or GGUF file; empty: the profile's (smollm2-135m)
corpus = ""  # corpus name or path to a text file (train / calib / eval splits); empty: wiki-leads
overrides = {}  # single settings, e.g. {"healing.tokens": 16384, "heal_k": 9}; see frankenllama.stages.profiles

# %% [markdown]
# # 03 · Healing
#
# Remove the `heal_k` blocks that notebook 02's best whole-block strategy chooses at that k, then win back quality
# with each healing recipe at the **same training-token budget**: LoRA, distillation from the
# unpruned model (through LoRA or on all weights), partial fine-tuning of the blocks next to the cut
# (Lu et al. 2024), and the training-free ReplaceMe linear patch (Shopkhoev et al. 2025), alone and
# followed by LoRA. Each healed model is saved as a variant `healed-<recipe>` for notebook 04.
#
# Two domains. Every recipe trains (and the patch calibrates) on wiki-leads, so its in-domain eval split
# (held-out wiki-leads articles) flatters healing. Each model is therefore also measured **out of
# domain**, on the eval split of `olmo-passages` (how-to instructions, video narration, exam questions,
# science textbooks: no Wikipedia prose), which no step of the workbook trains or calibrates on.
#
# The distillation recipes read the teacher's top-64 next-token log-probabilities (plus a tail
# bucket) from a cache filled by one teacher pass over the training blocks and shared by `kd-lora`
# and `kd-full` (`frankenllama.healing.teacher`); override `"healing.kd_top_k": 0` for the full-vocabulary KL
# with the teacher run at every step.
#
# The default budget, 8k tokens per recipe, is set by the pipeline's time limit: the whole
# notebook must finish in about 5 minutes on 2 CPU cores, where LoRA trains at roughly 200
# tokens/s. For the same reason the default profile heals with four of the six recipes
# (`linear-patch`, `lora`, `kd-lora`, `linear-patch+lora`): when all six ran at this budget, `kd-full`
# and `partial` recovered the least in both domains (in domain 1.51× and 1.63× the original's
# perplexity against 1.14–1.30× for the other four; out of domain 1.57× and 1.63× against 1.37–1.43×).
# Add them back with `{"healing.recipes": [...]}`; the `thesis` profile runs all six. On a GPU, raise
# `"healing.tokens"` or run the `thesis` profile.

# %%
from frankenllama.figures.healing import plot_losses, plot_ppl_vs_tokens, recipe_explorer
from frankenllama.figures.style import save_figure, set_style
from frankenllama.figures.tables import write_table
from frankenllama.paths import figures_dir
from frankenllama.stages import best_selection, healing_stage
from frankenllama.stages.profiles import build

set_style()
run = build(profile, model=model, corpus=corpus, overrides=overrides)
out = figures_dir(run.name == "smoke")
config = run.healing
strategy, layers = best_selection(run.pruning, run.heal_k)  # notebook 02's best whole-block cut at k = heal_k
print(f"removing blocks {layers} (strategy: {strategy})")
config

# %% [markdown]
# ## Heal with every recipe at the same budget

# %%
stage = healing_stage(config, layers, strategy)
print(f"in-domain ({config.corpus} eval split): unpruned PPL {stage.reference_ppl:.2f}, pruned and unhealed "
      f"{stage.unhealed_ppl:.2f}")
if stage.reference_ppl_ood is not None:
    print(f"out-of-domain ({config.ood_corpus} eval split): unpruned PPL {stage.reference_ppl_ood:.2f}, pruned and "
          f"unhealed {stage.unhealed_ppl_ood:.2f}")

# %% [markdown]
# ## Recovery table
#
# Eval perplexity before and after healing and the share of the gap to the unpruned model that each
# recipe closes (in perplexity and in nats), in domain `(in)` and out of domain `(out)`; the NLL share
# carries its 95 % paired bootstrap interval over the eval blocks (`NLL low`, `NLL high`); then tokens,
# time and throughput of the healing itself.

# %%
table = stage.recovery
domains = f"(in) = {config.corpus} eval split" + (f", (out) = {config.ood_corpus} eval split" if config.ood_corpus else "")
write_table(table, out, "healing_recovery", caption=f"Healing {config.model} after removing blocks {layers} "
            f"({strategy}); {domains}, {config.eval_blocks} blocks of {config.block_len} tokens each; unpruned eval PPL "
            f"{stage.reference_ppl:.2f} (in)" + (f", {stage.reference_ppl_ood:.2f} (out)" if stage.reference_ppl_ood else "")
            + f"; budget {config.tokens} training tokens per recipe; NLL low/high: 95 % paired bootstrap interval "
            "over blocks.")  # fmt: skip
table.round(2)

# %% [markdown]
# What the table supports, in words generated from it: a recipe won back part of the gap only where the
# interval of its NLL share lies above 0, and it generalises beyond the training domain only where the
# out-of-domain interval does too.

# %%
for r in table.to_dict("records"):
    said = []
    for domain, label in (("in", "in-domain"), ("out", "out-of-domain")):
        if f"gap recovered NLL % ({domain})" in r:
            share, low, high = (r[f"{c} ({domain})"] for c in ("gap recovered NLL %", "NLL low", "NLL high"))
            verdict = ("won back part of the gap" if low > 0 else "lost ground" if high < 0
                       else "its interval includes 0: not a real change" if low == low else "no interval (no gap on these blocks)")
            said.append(f"{label} {share:.0f} % of the NLL gap, 95 % [{low:.0f}, {high:.0f}]: {verdict}")
    print(f"{r['recipe']}: " + "; ".join(said))

# %% [markdown]
# ## Eval perplexity vs training tokens
# In domain (left) and out of domain (right): the dashed line is the unpruned model, the dotted one the
# pruned model before healing.

# %%
fig = plot_ppl_vs_tokens(stage.results, stage.reference_ppl, stage.unhealed_ppl, stage.reference_ppl_ood,
                         stage.unhealed_ppl_ood)
save_figure(fig, "healing_ppl_vs_tokens", out)

# %% [markdown]
# ## Training loss curves
#
# Cross-entropy part of the loss (nats per token) for every trained recipe; the distillation
# recipes also minimise a KL term, shown in their logs (`losses.csv` in each variant folder).

# %%
fig = plot_losses(stage.results, key="ce")
save_figure(fig, "healing_losses", out)

# %% [markdown]
# ## Explorer
# Pick a recipe and one of its evaluation points: its training loss and eval perplexity, in and out of
# domain, against the others' (from the cached runs; nothing is recomputed).

# %%
recipe_explorer(stage.results, stage.reference_ppl, stage.unhealed_ppl, stage.reference_ppl_ood, stage.unhealed_ppl_ood)

# %% [markdown]
# ## Where the healed models are
# Each healed model is a variant, a transformers folder that notebook 04 evaluates; load one with
# `frankenllama.load_model(folder)`.

# %%
print("\n".join(f"{r.config.recipe:>20}  {r.out_dir}" for r in stage.results))
