"""Every setting of ``compress`` in one place: the named defaults, the profiles, ``CompressConfig``.

The defaults are named constants so that the study which decides them (notebook 05, issue 11)
changes one line: the selection strategy (``DEFAULT_STRATEGY``, with ``FALLBACK_STRATEGY`` when
the target cannot be expressed at its granularity), the healing recipe (``DEFAULT_HEAL``) and the
budgets of each profile (``PROFILES``). A profile also picks the scoring settings of the pruning
stage (``frankenllama.stages.profiles``), so ``compress`` reads the scores and searches notebook 02
cached for the same model, and vice versa.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from frankenllama.compress.target import Target, parse_target
from frankenllama.eval.efficiency import SpeedConfig
from frankenllama.eval.tasks import DEFAULT_TASKS as EVALUATOR_TASKS
from frankenllama.eval.tasks import check_task_name
from frankenllama.healing import parse_recipe
from frankenllama.selection import get_strategy
from frankenllama.stages.recipe import OURS_HEAL_OPTIONS, OURS_RECIPE, OURS_STRATEGY

# the FrankenLLaMA recipe (frankenllama.stages.recipe, where notebook 05 compares it with the peers)
DEFAULT_STRATEGY, DEFAULT_HEAL, DEFAULT_HEAL_OPTIONS = OURS_STRATEGY, OURS_RECIPE, OURS_HEAL_OPTIONS
FALLBACK_STRATEGY = "swap-search"  # the whole-block strategy used when the default cannot express the target
DEFAULT_TASKS = ("arc_easy", "piqa", "hellaswag")
IN_DOMAIN, OUT_OF_DOMAIN = "wiki-leads", "olmo-passages"

# The budgets of each profile; everything else is CompressConfig's default. "smoke" is for tests and CI.
# default: 32k training tokens, sized so that the whole command fits 15 minutes on the slowest 2-core machine
# it was measured on (an AMD EPYC VM at 2.6 GHz training at ~200 tokens/s: 64k tokens took it 1,184 s); four
# times the tokens (the thesis budget) moved neither acc_norm nor much of the perplexity (recipe.py's table).
PROFILES: dict[str, dict[str, Any]] = {
    "default": dict(tokens=32_768, calib_tokens=32_768, eval_items=150, eval_blocks=32,
                    speed=SpeedConfig((1,), 64, 16, 3, warmup=1, threads=1)),
    # thesis: every item of the evaluator's eight tasks (frankenllama.eval.tasks.DEFAULT_TASKS), as notebook 04's
    # thesis profile scores them; the default keeps the three of the CPU budget
    "thesis": dict(tokens=262_144, calib_tokens=65_536, eval_items=None, eval_blocks=64, tasks=EVALUATOR_TASKS,
                   speed=SpeedConfig((1, 8), 128, 32, 5, warmup=2)),
    "smoke": dict(tokens=512, calib_tokens=1_024, eval_items=8, eval_blocks=4, block_len=64, batch_size=2,
                  train_batch=2, checkpoint_every=1, n_boot=200, speed=SpeedConfig((1,), 16, 3, 1, warmup=0, threads=1)),
}


class CompressConfigError(ValueError):
    """A setting of ``compress`` that cannot work (unknown strategy, recipe, profile or task)."""


@dataclass(frozen=True)
class CompressConfig:
    """What one ``compress`` run does; validated on construction (``CompressConfigError``).

    Attributes:
        model: registry name, transformers folder or GGUF file of the llama-family model.
        target: the size target as typed (``frankenllama.compress.target``).
        strategy: a key of ``frankenllama.selection.STRATEGIES``.
        heal: a healing recipe or composition (``frankenllama.healing.RECIPES``).
        tokens: training tokens of the trained recipe.
        calib_tokens: calibration tokens of the linear patch's least-squares fit.
        profile: scoring settings of the pruning stage (``frankenllama.stages.profiles``) and the budgets.
        corpus / ood_corpus: in-domain text (its ``train``/``calib`` splits heal, its ``eval`` split
            is reported) and out-of-domain text (only its ``eval`` split is read).
        train_batch: training blocks per optimizer step (``tokens // (train_batch · block_len)`` steps;
            32 at the default budget). At the 64k-token budget of sessions 12-14, one block per step (256
            steps) was tried and not adopted: +1.3 points acc_norm on development items ([-0.3, +2.8]), +0.2
            on the reported ones, out-of-domain perplexity 1.22 instead of 1.20; at the default 32k tokens (128
            steps, session 23) it answered the 1,200 development items alike (0.0 [-0.9, +0.9] points) with
            0.018 more gold bits per byte (``bench/zero_shot_recipe_probe.py --batch``).
        batch_size: blocks per forward pass when measuring perplexity.
        eval_blocks: held-out blocks of ``block_len`` tokens per domain for perplexity.
        tasks / eval_items: zero-shot tasks and items per task (``None``: all).
        chat_template: score zero-shot items inside the chat template (``None``: when the tokenizer has one).
        checkpoint_every: optimizer steps between healing checkpoints (a killed run resumes from the last).
        n_boot: bootstrap resamples of every paired interval.
    """

    model: str
    target: str
    strategy: str = DEFAULT_STRATEGY
    fallback_strategy: str | None = FALLBACK_STRATEGY
    heal: str = DEFAULT_HEAL
    tokens: int = 32_768
    calib_tokens: int = 32_768
    profile: str = "default"
    seed: int = 0
    corpus: str = IN_DOMAIN
    ood_corpus: str = OUT_OF_DOMAIN
    block_len: int = 256
    train_batch: int = 4
    batch_size: int = 4
    eval_blocks: int = 32
    tasks: tuple[str, ...] = DEFAULT_TASKS
    eval_items: int | None = 150
    chat_template: bool | None = None
    checkpoint_every: int = 8
    kd_top_k: int = 64
    n_boot: int = 2000
    speed: SpeedConfig = field(default_factory=lambda: PROFILES["default"]["speed"])

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.profile not in PROFILES:
            raise CompressConfigError(f"unknown profile {self.profile!r}; choose one of {sorted(PROFILES)}")
        for name in (self.strategy, *([self.fallback_strategy] if self.fallback_strategy else [])):
            try:
                get_strategy(name)
            except KeyError as err:
                raise CompressConfigError(f"{err.args[0]} (--strategy)") from None
        try:
            parse_recipe(self.heal)
        except KeyError as err:
            raise CompressConfigError(f"{err.args[0]} (--heal)") from None
        for task in self.tasks:
            try:
                check_task_name(task)
            except (KeyError, ValueError) as err:
                raise CompressConfigError(str(err.args[0])) from None
        ints = {"tokens": self.tokens, "calib_tokens": self.calib_tokens, "block_len": self.block_len,
                "train_batch": self.train_batch, "batch_size": self.batch_size, "eval_blocks": self.eval_blocks, "n_boot": self.n_boot}  # fmt: skip
        if self.eval_items is not None:
            ints["eval_items"] = self.eval_items  # None: every item
        bad = [f"{k}={v!r}" for k, v in ints.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1]
        if bad or self.block_len < 2:
            raise CompressConfigError(f"settings must be positive integers (block_len >= 2): {bad or ['block_len=1']}")
        if str(self.corpus) == str(self.ood_corpus):
            raise CompressConfigError(f"--ood-corpus {self.ood_corpus!r} is the healing corpus: out-of-domain text must be "
                                      "text the recipe never trained or calibrated on; name another corpus or text file")
        self.parsed_target  # noqa: B018 (validates the target's form)

    @property
    def parsed_target(self) -> Target:
        return parse_target(self.target)

    @classmethod
    def from_profile(cls, model: str, target: str, profile: str = "default", **settings: Any) -> CompressConfig:
        """The config of ``profile`` for ``model`` and ``target``; ``settings`` (not None) override single fields."""
        if profile not in PROFILES:
            raise CompressConfigError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
        given = {k: v for k, v in settings.items() if v is not None}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - names)
        if unknown:
            raise CompressConfigError(f"unknown settings {unknown}; CompressConfig has {sorted(names)}")
        return cls(model=model, target=target, profile=profile, **{**PROFILES[profile], **given})
