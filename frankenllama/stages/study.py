"""Notebook 02's study: how well the cheap proxies track the true one-layer-out damage, and how
stable each strategy's choice is across calibration subsets (cached)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from frankenllama.cache import cached_json, seed_everything
from frankenllama.models import num_layers
from frankenllama.scoring import SCORES, AblationScan, SelectionContext
from frankenllama.selection import get_strategy, select_layers
from frankenllama.stages.common import shared_model
from frankenllama.stages.pruning import CODE as PRUNING_CODE
from frankenllama.stages.pruning import STUDY_KS, PruningConfig, check_ks, scoring_context

CODE = (*PRUNING_CODE, "frankenllama.stages.study")


@dataclass(frozen=True)
class StudyConfig:
    """How well the cheap proxies track the truth, and how stable each strategy's choice is.

    Correlation: Spearman's ρ between each proxy and the one-layer-out ΔPPL on the calibration
    blocks, with percentile bootstrap intervals over calibration blocks (``n_boot`` resamples;
    Taylor, which does not decompose over samples, gets a delete-one jackknife interval).
    Stability: ``draws`` random subsets of ``sizes`` calibration blocks (seed = which blocks are
    drawn); each strategy's choice at ``ks`` on each subset, compared across draws (mean pairwise
    Jaccard) and with the choice on all calibration blocks. Strategies that measure the model by
    search or gradients are re-run on ``search_draws`` subsets of each of ``search_sizes`` blocks.
    """

    pruning: PruningConfig = field(default_factory=PruningConfig)
    proxies: tuple[str, ...] = ("block-influence", "angular", "angular-all", "ablation-kl", "taylor")
    truth: str = "ablation-ppl"
    n_boot: int = 1000
    level: float = 0.95
    sizes: tuple[int, ...] = (2, 4)
    draws: int = 10
    ks: tuple[int, ...] = STUDY_KS
    stability_strategies: tuple[str, ...] = ("block-influence", "angular", "angular-block", "ablation-nll",
                                             "ablation-kl", "contiguous-nll", "taylor+", "sleb")
    search_sizes: tuple[int, ...] = (4,)
    search_draws: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (*self.proxies, self.truth):
            if name not in SCORES:
                raise KeyError(f"unknown score {name!r}; choose one of {sorted(SCORES)}")
        for name in self.stability_strategies:
            if get_strategy(name).granularity != "layer":
                raise ValueError(f"stability is studied for layer strategies; {name!r} is not one")
        if not 0 < self.level < 1 or self.n_boot < 10 or self.draws < 2 or self.search_draws < 0:
            raise ValueError("need 0 < level < 1, n_boot >= 10, draws >= 2 and search_draws >= 0")
        n = self.pruning.scoring.calib.n_blocks
        too_big = [s for s in (*self.sizes, *self.search_sizes) if not 1 <= s <= n]
        if too_big:
            raise ValueError(f"calibration subset sizes {too_big} outside 1 … {n} (the calibration blocks)")


def _proxy_on(scan: AblationScan, name: str, rows: np.ndarray) -> np.ndarray:
    sub = SelectionContext(scans=[scan.subset(rows)])
    return sub.score(name)


def _jaccard(a: list[int], b: list[int]) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def _correlation(ctx: SelectionContext, scan: AblationScan, config: StudyConfig) -> list[dict]:
    """Spearman's ρ of each proxy with the truth, with bootstrap (or, for Taylor, jackknife) intervals."""
    N = scan.n_samples
    everything = np.arange(N)
    rng = np.random.default_rng(config.seed)
    alpha = (1 - config.level) / 2
    truth = _proxy_on(scan, config.truth, everything)
    correlation = []
    boots = [rng.integers(0, N, N) for _ in range(config.n_boot)]
    for proxy in config.proxies:
        if proxy.startswith("taylor"):
            taylor = ctx.taylor()
            if not len(taylor.loo):
                raise ValueError("the Taylor interval needs ScoringConfig(taylor_jackknife=True)")
            rho = float(stats.spearmanr(taylor.score, truth).statistic)
            reps = np.array([stats.spearmanr(taylor.loo[i], _proxy_on(scan, config.truth, np.delete(everything, i))).statistic
                             for i in range(N)])
            se = math.sqrt((N - 1) / N * ((reps - reps.mean()) ** 2).sum())
            z = stats.norm.ppf(1 - alpha)
            correlation.append({"proxy": proxy, "spearman": rho, "low": rho - z * se, "high": min(1.0, rho + z * se),
                                "interval": f"jackknife ({N} leave-one-out)"})
            continue
        rho = float(stats.spearmanr(_proxy_on(scan, proxy, everything), truth).statistic)
        reps = np.array([stats.spearmanr(_proxy_on(scan, proxy, rows), _proxy_on(scan, config.truth, rows)).statistic
                         for rows in boots])
        low, high = np.nanquantile(reps, [alpha, 1 - alpha])
        correlation.append({"proxy": proxy, "spearman": rho, "low": float(low), "high": float(high),
                            "interval": f"bootstrap ({config.n_boot} resamples of {N} blocks)"})
    return correlation


def _choices(ctx: SelectionContext, scan: AblationScan, config: StudyConfig) -> list[dict]:
    """Each stability strategy's choice at every k on every calibration subset drawn."""
    N = scan.n_samples
    choices = []
    full = {s: {k: select_layers(ctx, k, s) for k in config.ks} for s in config.stability_strategies}
    for strategy in config.stability_strategies:
        spec = get_strategy(strategy)
        searched = spec.needs_model and strategy not in ("ablation-nll", "ablation-kl", "contiguous-nll")
        sizes = config.search_sizes if searched else config.sizes
        draws = config.search_draws if searched else config.draws
        for size in sizes:
            for draw in range(draws):
                rows = np.sort(np.random.default_rng([config.seed, size, draw]).choice(N, size, replace=False))
                sub = scan.subset(rows)
                if searched:
                    sub_ctx = SelectionContext(sub.similarity(), ctx.model, ctx.calib[rows], batch_size=ctx.batch_size,
                                          shortlist=ctx.shortlist, scans=[sub], greedy_steps=max(config.ks), **ctx.streams)
                else:
                    sub_ctx = SelectionContext(scans=[sub])
                if spec.nested:
                    select_layers(sub_ctx, max(config.ks), strategy)
                for k in config.ks:
                    layers = select_layers(sub_ctx, k, strategy)
                    choices.append({"strategy": strategy, "size": size, "draw": draw, "k": k, "layers": layers,
                                    "jaccard_full": _jaccard(layers, full[strategy][k])})
    return choices


def _stability(choices: list[dict]) -> list[dict]:
    """Mean pairwise Jaccard between draws, and with the choice on all calibration blocks, per (strategy, size, k)."""
    stability = []
    for (strategy, size, k), group in pd.DataFrame(choices).groupby(["strategy", "size", "k"], sort=False):
        picks = list(group.layers)
        pairs = [_jaccard(a, b) for i, a in enumerate(picks) for b in picks[i + 1:]]
        stability.append({"strategy": strategy, "size": size, "k": k, "draws": len(picks),
                          "jaccard_between_draws": float(np.mean(pairs)) if pairs else float("nan"),
                          "jaccard_with_full": float(group.jaccard_full.mean())})
    return stability


def study_stage(config: StudyConfig) -> dict[str, pd.DataFrame]:
    """``{"correlation", "stability", "choices"}`` tables of the proxy-vs-truth study (cached)."""

    def compute():
        seed_everything(config.seed)
        model, _ = shared_model(config.pruning.similarity.model)
        check_ks(config.ks, num_layers(model))
        ctx = scoring_context(config.pruning)
        scan = ctx.scan()
        correlation = _correlation(ctx, scan, config)
        choices = _choices(ctx, scan, config)
        return {"correlation": correlation, "stability": _stability(choices), "choices": choices}

    result = cached_json("study", config, compute, seed=config.seed, code=CODE)
    return {name: pd.DataFrame(rows) for name, rows in result.items()}
