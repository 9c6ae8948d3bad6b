"""``HealResult``: what one healing run produced (the healed model, its costs and its curves)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from frankenllama.healing.recipes import HealConfig


@dataclass
class HealResult:
    """What a healing run produced and what it cost."""

    model: PreTrainedModel | None  # the healed plain transformers model (eval mode); None once released
    config: HealConfig
    out_dir: Path | None
    tokens_seen: int  # training tokens (0 for a training-free recipe)
    calib_tokens: int  # calibration tokens used by the patch
    steps: int
    train_time_s: float  # seconds in patching + optimizer steps (no eval, no saving)
    wall_time_s: float  # seconds for the whole call (this session; cumulative over resumes)
    tokens_per_s: float  # training tokens / seconds in optimizer steps
    ppl_before: float | None  # eval perplexity of the student as given
    ppl_after: float | None
    ppl_before_ood: float | None = None  # the same, on out-of-domain eval blocks (None: not measured)
    ppl_after_ood: float | None = None
    block_nll: dict[str, list[float]] = field(default_factory=dict)  # per-block mean NLL: before, after, before_ood, after_ood
    curve: list[dict[str, float]] = field(default_factory=list)  # {"step", "tokens", "ppl"}
    losses: list[dict[str, float]] = field(default_factory=list)  # one row per logged step
    patch_fits: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_step: int | None = None
    cached: bool = False
    fingerprint: str = ""
    teacher_time_s: float = 0.0  # the one teacher pass over the run's blocks (0 when its targets were cached)
    teacher_tail_mass: float | None = None  # mean teacher probability outside the cached top k

    def summary(self) -> dict[str, Any]:
        """A flat row for tables: recipe, tokens, times, perplexities."""
        return {
            "recipe": self.config.recipe,
            "tokens": self.tokens_seen,
            "calib_tokens": self.calib_tokens,
            "steps": self.steps,
            "train_time_s": round(self.train_time_s, 1),
            "wall_time_s": round(self.wall_time_s, 1),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "teacher_time_s": round(self.teacher_time_s, 1),
            "ppl_before": self.ppl_before,
            "ppl_after": self.ppl_after,
            "ppl_before_ood": self.ppl_before_ood,
            "ppl_after_ood": self.ppl_after_ood,
        }
