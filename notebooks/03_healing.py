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
corpus = "wiki-leads"  # corpus name or path to a text file (train / calib / eval splits)
n_drop = 6  # blocks to remove before healing (the best strategy's choice from notebook 02)
recipes = ["linear-patch", "lora", "kd-lora", "kd-full", "partial", "linear-patch+lora"]  # RECIPES keys or compositions
tokens = 8192  # training-token budget per recipe: 8 steps of 4 x 256, sized for the 30-minute pipeline
block_len = 256  # tokens per block (training, calibration, evaluation)
batch_size = 4  # blocks per optimizer step
eval_every = 4  # optimizer steps between eval-perplexity points
checkpoint_every = 4  # optimizer steps between checkpoints (a killed run resumes from the last one)
eval_blocks = 8  # held-out eval blocks: 8 x 256 = 2k tokens
patch_tokens = 8192  # calibration tokens for the linear patch's least-squares fit
kd_top_k = 64  # distillation targets: the teacher's top-k tokens, cached once (0: full KL, teacher run every step)
seed = 0  # seed set at the entry of each healing run
smoke = False  # small, fast profile for tests and CI (~1 min)

# %% [markdown]
# # 03 · Healing
#
# Remove `n_drop` blocks (those the best strategy of notebook 02 chooses), then win back quality
# with each healing recipe at the **same training-token budget**: LoRA, distillation from the
# unpruned model (through LoRA or on all weights), partial fine-tuning of the blocks next to the cut
# (Lu et al. 2024), and the training-free ReplaceMe linear patch (Shopkhoev et al. 2025), alone and
# followed by LoRA. Each healed model is saved as a variant `healed-<recipe>` for notebook 04.
#
# The distillation recipes read the teacher's top-64 next-token log-probabilities (plus a tail
# bucket) from a cache filled by one teacher pass over the training blocks and shared by `kd-lora`
# and `kd-full` (`frankenllama.healing.teacher`); set `kd_top_k = 0` below for the full-vocabulary KL
# with the teacher run at every step.
#
# The default budget, 8k tokens per recipe, is set by the pipeline's time limit: the whole
# notebook must finish in about 8 minutes on 2 CPU cores, where LoRA trains at roughly 200
# tokens/s. On a GPU, raise `tokens`.

# %%
from frankenllama.data import load_corpus, token_blocks
from frankenllama.healing import (
    HealConfig,
    compare_recipes,
    layers_to_remove,
    plot_losses,
    plot_ppl_vs_tokens,
    recovery_table,
)
from frankenllama.models import load_model
from frankenllama.paths import figures_dir
from frankenllama.perplexity import perplexity
from frankenllama.plotting import save_figure, set_style
from frankenllama.surgery import drop_layers
from frankenllama.tables import write_table

if smoke:
    n_drop, tokens, block_len, batch_size, eval_every, eval_blocks, patch_tokens = 2, 128, 64, 2, 1, 2, 1024
set_style()
out = figures_dir(smoke)
teacher, tokenizer = load_model(model)
train = token_blocks(tokenizer, load_corpus(corpus, "train"), block_len, max_blocks=tokens // block_len)
calib = token_blocks(tokenizer, load_corpus(corpus, "calib"), block_len, max_blocks=-(-patch_tokens // block_len))
held_out = token_blocks(tokenizer, load_corpus(corpus, "eval"), block_len, max_blocks=eval_blocks)
strategy, layers = layers_to_remove(teacher, n_drop, model, fallback_blocks=calib)
student = drop_layers(teacher, layers)
reference_ppl = perplexity(teacher, held_out)
print(f"removing blocks {layers} (strategy: {strategy}); unpruned eval PPL {reference_ppl:.2f}")

# %% [markdown]
# ## Heal with every recipe at the same budget

# %%
base = HealConfig(tokens=tokens, batch_size=batch_size, eval_every=eval_every, checkpoint_every=checkpoint_every,
                  patch_tokens=patch_tokens, kd_top_k=kd_top_k, seed=seed)  # fmt: skip
results = compare_recipes(
    student, tokenizer, recipes, base, teacher=teacher, train_blocks=train, eval_blocks=held_out,
    calib_blocks=calib, variant_prefix="smoke-healed" if smoke else "healed",
    meta={"strategy": strategy, "removed_layers": layers, "base_model": model},
)  # fmt: skip

# %% [markdown]
# ## Recovery table
#
# Eval perplexity before and after healing and the share of the gap to the unpruned model that each
# recipe closes (in perplexity and in nats); tokens, time and throughput of the healing itself.

# %%
table = recovery_table(results, reference_ppl)
write_table(table, out, "healing_recovery", caption=f"Healing SmolLM2-135M after removing blocks {layers} "
            f"({strategy}); unpruned eval PPL {reference_ppl:.2f}; budget {tokens} training tokens per recipe.")  # fmt: skip
table.round(2)

# %% [markdown]
# ## Eval perplexity vs training tokens

# %%
fig = plot_ppl_vs_tokens(results, reference_ppl, unhealed_ppl=results[0].ppl_before)
save_figure(fig, "healing_ppl_vs_tokens", out)

# %% [markdown]
# ## Training loss curves
#
# Cross-entropy part of the loss (nats per token) for every trained recipe; the distillation
# recipes also minimise a KL term, shown in their logs (`losses.csv` in each variant folder).

# %%
fig = plot_losses(results, key="ce")
save_figure(fig, "healing_losses", out)
