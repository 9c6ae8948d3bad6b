"""Compress a llama-family model to a size target in one call: ``python -m frankenllama compress``.

``compress(CompressConfig.from_profile(model, target), out)`` selects what to remove under the
target (``fit_budget`` over the pruning stage's cached scores and searches), removes it, heals the
result (ReplaceMe linear patch + distillation from cached teacher targets through LoRA, merged) and
saves a model folder with ``report.json`` / ``report.md``: the choice, sizes, paired perplexity in
and out of domain, paired zero-shot differences with intervals, speed, wall time per step and
provenance. Modules: ``target`` (parsing the size target), ``config`` (every default, by profile),
``steps`` (the cached steps), ``report`` (comparisons and markdown), ``pipeline`` (``compress``),
``cli`` (the verb).
"""

from frankenllama.compress.config import (DEFAULT_HEAL, DEFAULT_STRATEGY, FALLBACK_STRATEGY, PROFILES, CompressConfig,
                                          CompressConfigError)
from frankenllama.compress.pipeline import CompressResult, compress
from frankenllama.compress.steps import CompressError
from frankenllama.compress.target import Target, TargetError, parse_target

__all__ = ["DEFAULT_HEAL", "DEFAULT_STRATEGY", "FALLBACK_STRATEGY", "PROFILES", "CompressConfig", "CompressConfigError",
           "CompressError", "CompressResult", "Target", "TargetError", "compress", "parse_target"]
