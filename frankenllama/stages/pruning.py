"""Notebook 02's stage: which layers to remove — scores, strategies, pruning curves, pruned variants.

``pruning_stage`` measures every strategy's choice at every k of the study on held-out text (cached);
``best_selection`` hands the winning cut to notebook 03; ``save_pruned_variants`` stores the pruned
models that notebook 04 compares. ``scoring_context`` is the selection context (scores and
searches cached on disk) that the study (``frankenllama.stages.study``) shares.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from frankenllama.budget import Budget, count_params, fit_budget, unit_params
from frankenllama.cache import NOT_IN_KEY, cached_arrays, cached_json, config_key, seed_everything, stored_arrays
from frankenllama.models import num_layers
from frankenllama.scoring import SelectionContext, Trunk
from frankenllama.selection import STRATEGIES, check_k, get_strategy, select_layers
from frankenllama.stages.common import DataConfig, shared_model
from frankenllama.stages.similarity import SimilarityConfig, similarity_stage
from frankenllama.streams import check_place
from frankenllama.sublayer import prune_sublayers
from frankenllama.surgery import drop_layers
from frankenllama.units import describe, removal_mask
from frankenllama.variants import intact, list_variants, save_variant, variant_path


STUDY_KS: tuple[int, ...] = (3, 6, 9)  # the k's of the study: searches, sub-layer strategies, stability
# What computes a pruning stage's result (the code part of its cache key, see frankenllama.cache).
CODE = ("frankenllama.scoring", "frankenllama.units", "frankenllama.selection", "frankenllama.budget",
        "frankenllama.sublayer", "frankenllama.surgery", "frankenllama.similarity",
        "frankenllama.loss", "frankenllama.data", "frankenllama.models", "frankenllama.stages.pruning")


@dataclass(frozen=True)
class ScoringConfig:
    """How the model-measuring scores and searches run: on which calibration blocks, how many at once.

    ``shortlist``: after their first step the greedy searches (SLEB, BlockPruner) evaluate only the
    ``shortlist`` candidates that were best at the previous step (``None``: the exact search).
    ``stream_store``: where the scan and searches keep cached residual streams (``"device"``,
    ``"cpu"``, ``"disk"``; ``frankenllama.streams``), for models whose streams crowd the accelerator;
    it does not change results and enters no cache key (``frankenllama.cache.NOT_IN_KEY``).
    """

    calib: DataConfig = field(default_factory=lambda: DataConfig(split="calib", n_blocks=8))
    batch_size: int = 4
    shortlist: int | None = None
    taylor_jackknife: bool = True  # leave-one-out Taylor scores, for the study's interval
    sublayer_blocks: int | None = None  # sub-blocks (2L units) measured on the first this many blocks; None: all
    stream_store: str = field(default="device", metadata=NOT_IN_KEY)

    def __post_init__(self) -> None:
        if self.calib.split != "calib":
            raise ValueError(f"scores are measured on the 'calib' split, not {self.calib.split!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.shortlist is not None and self.shortlist < 1:
            raise ValueError(f"shortlist must be positive or None, got {self.shortlist}")
        check_place(self.stream_store)


@dataclass(frozen=True)
class PruningConfig:
    """Pruning curves: held-out eval perplexity after removing k blocks, for each strategy and k.

    Sub-layer strategies are compared at equal size: at "k" they remove sub-blocks until the model
    is no larger than the model with k blocks removed (``frankenllama.budget``).
    """

    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    eval_data: DataConfig = field(default_factory=lambda: DataConfig(split="eval", n_blocks=16))
    strategies: tuple[str, ...] = tuple(STRATEGIES)
    ks: tuple[int, ...] = tuple(range(0, 13))
    sublayer_ks: tuple[int, ...] = (0, *STUDY_KS)  # the points of ``ks`` where sub-layer strategies are measured
    search_ks: tuple[int, ...] | None = None  # the points of ``ks`` where search strategies are measured (None: all)
    batch_size: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in self.strategies:
            get_strategy(name)
        if len(set(self.strategies)) != len(self.strategies) or not self.strategies:
            raise ValueError(f"strategies must be distinct and non-empty, got {self.strategies}")
        if not self.ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in self.ks):
            raise ValueError(f"ks must be non-negative integers, got {self.ks}")
        if self.eval_data.split != "eval":
            raise ValueError(f"pruning curves are measured on the held-out 'eval' split, not {self.eval_data.split!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")


def _disk_store(model: str, scoring: ScoringConfig, seed: int):
    """The selection context's ``store`` and ``peek`` on the disk cache (``scores``), shared by every context of ``scoring``."""
    def key(kind: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"model": model, "calib": scoring.calib, "kind": kind, "params": params}

    def store(kind: str, params: dict[str, Any], compute):
        return cached_arrays("scores", key(kind, params), compute, seed=seed, code=CODE)

    def peek(kind: str, params: dict[str, Any]):
        return stored_arrays("scores", key(kind, params), code=CODE)

    return store, peek


def scoring_context(config: PruningConfig) -> SelectionContext:
    """The ``SelectionContext`` of ``config``: notebook 01's similarity, the shared model, calib blocks, a disk cache.

    A greedy search runs only as deep as a selection asks, and a run stored before at any depth is read or
    extended (the same first steps, hence the same choices): the pruning curves ask each nested strategy's
    largest k first, so one run serves every k; ``compress``, selecting at one k, runs no deeper than it needs.
    """
    model, tokenizer = shared_model(config.similarity.model)
    calib = config.scoring.calib.blocks(tokenizer, model)
    store, peek = _disk_store(config.similarity.model, config.scoring, config.seed)
    return SelectionContext(similarity_stage(config.similarity), model, calib, batch_size=config.scoring.batch_size,
                       shortlist=config.scoring.shortlist, progress=True, store=store, peek=peek,
                       sublayer_blocks=config.scoring.sublayer_blocks, jackknife=config.scoring.taylor_jackknife,
                       stream_store=config.scoring.stream_store)


def check_ks(ks: tuple[int, ...], L: int) -> None:
    for k in ks:
        if k:
            check_k(k, L)


def _layer_budget(total: int, sizes: np.ndarray, k: int) -> Budget:
    """The parameter budget of the model with k (average-sized) blocks removed."""
    return Budget(params=int(total - round(k * sizes.mean())))


def pruning_stage(config: PruningConfig) -> pd.DataFrame:
    """Rows ``(strategy, granularity, k, units, layers, eval_ppl, num_params, …)``; k = 0 is the unpruned model (cached).

    Each configuration's eval loss is computed from the eval stream of the unpruned model cached at
    the first removed block (``Trunk.mask_nll``), identical configurations are evaluated once, and
    the nested searches run once to the largest k.
    """

    def compute():
        seed_everything(config.seed)
        model, tokenizer = shared_model(config.similarity.model)
        L = num_layers(model)
        check_ks(config.ks, L)
        ctx = scoring_context(config)
        eval_ids = config.eval_data.blocks(tokenizer, model)
        trunk = Trunk(model, eval_ids, config.batch_size)
        trunk.refresh(np.zeros((L, 2), dtype=bool), progress=True)
        count = float(trunk.n_predictions().sum())
        total = count_params(model)
        layer_sizes = unit_params(model, "layer")
        kmax = max(config.ks)
        rows, seen = [], {}
        for strategy in config.strategies:
            spec = get_strategy(strategy)
            sizes = unit_params(model, spec.granularity)
            started = time.perf_counter()
            ks = config.ks if spec.granularity == "layer" else tuple(k for k in config.ks if k in config.sublayer_ks)
            if spec.search and config.search_ks is not None:
                ks = tuple(k for k in ks if k in config.search_ks)
            for k in sorted(ks, reverse=spec.nested):  # a nested search runs once, to the largest k
                if k == 0:
                    units: list[int] = []
                elif spec.granularity == "layer":
                    units = select_layers(ctx, k, strategy)
                else:
                    units = fit_budget(ctx, _layer_budget(total, layer_sizes, k), strategy).removed
                mask = removal_mask(units, L, spec.granularity)  # type: ignore[arg-type]
                key = mask.tobytes()
                if key not in seen:
                    seen[key] = float(trunk.mask_nll(mask).sum()) / count
                nll = seen[key]
                rows.append({
                    "strategy": strategy, "granularity": spec.granularity, "k": k, "units": units,
                    "layers": [int(l) for l in np.flatnonzero(mask.all(axis=1))],
                    "sublayers": describe(units) if spec.granularity == "sublayer" else [],
                    "eval_nll": nll, "eval_ppl": math.exp(nll), "num_params": total - int(sizes[units].sum()),
                })
            rows[-1]["select_seconds"] = time.perf_counter() - started
        return rows

    df = pd.DataFrame(cached_json("pruning", config, compute, seed=config.seed, code=CODE))
    return df.sort_values(["strategy", "k"], key=lambda c: c.map(list(config.strategies).index) if c.name == "strategy" else c,
                          kind="stable").reset_index(drop=True)


def best_strategies(curves: pd.DataFrame, granularity: str | None = "layer") -> pd.DataFrame:
    """For each k > 0, the strategy of lowest eval perplexity and its margins over BI and angular-block.

    ``granularity``: ``"layer"`` or ``"sublayer"`` strategies only, or ``None`` for all (sub-layer
    strategies are measured at the parameter count of k removed layers). ``tied_with`` lists the
    other strategies that found a configuration as good (typically the same layers).
    """
    rows = []
    sub = curves[curves.k > 0] if granularity is None else curves[(curves.granularity == granularity) & (curves.k > 0)]
    refs = curves[curves.k > 0]
    for k, group in sub.groupby("k"):
        best = group.loc[group.eval_ppl.idxmin()]
        ref = refs[refs.k == k].set_index("strategy").eval_ppl
        tied = [s for s, v in zip(group.strategy, group.eval_ppl) if s != best.strategy and v <= best.eval_ppl * (1 + 1e-9)]
        rows.append({"k": int(k), "strategy": best.strategy, "granularity": best.granularity,
                     "layers": best.layers, "units": best.units, "eval_ppl": best.eval_ppl, "tied_with": tied,
                     **{f"vs {name}": ref[name] - best.eval_ppl for name in ("block-influence", "angular-block") if name in ref}})
    return pd.DataFrame(rows)


def best_summary(best: pd.DataFrame) -> str:
    """Markdown bullets: at each k, the best strategy, what it removes, and its margins over BI and angular-block."""
    lines = []
    for _, row in best.iterrows():
        margins = [f"{row[f'vs {name}']:.1f} below {name}" if row[f"vs {name}"] > 0 else f"no better than {name}"
                   for name in ("block-influence", "angular-block") if f"vs {name}" in row]
        what = list(row.layers) if row.granularity == "layer" else describe(row.units)
        ties = f" (tied with {', '.join(row.tied_with)})" if len(row.tied_with) else ""
        lines.append(f"* k = {row.k}: **{row.strategy}**{ties} removes {what}: eval PPL {row.eval_ppl:.1f}, "
                     + " and ".join(margins))
    return "\n".join(lines)


def best_selection(config: PruningConfig, k: int) -> tuple[str, list[int]]:
    """The layer strategy of lowest eval perplexity at ``k`` in ``config``'s (cached) pruning curves, and its layers.

    For notebook 03: ``strategy, layers = best_selection(config, 6)`` then ``drop_layers(model, layers)``.
    Runs the pruning stage if its result is not cached yet.
    """
    if k not in config.ks or k == 0:
        raise ValueError(f"k = {k} is not a pruning-curve point of this config (ks = {config.ks})")
    curves = pruning_stage(config)
    rows = curves[(curves.granularity == "layer") & (curves.k == k)]
    best = rows.loc[rows.eval_ppl.idxmin()]
    return str(best.strategy), [int(l) for l in best.layers]


def save_pruned_variants(
    config: PruningConfig, ks: tuple[int, ...], also: tuple[str, ...] = ("block-influence", "angular-block")
) -> list[str]:
    """Save the best strategy's pruned model at each k (and ``also`` these strategies) as variants.

    Names ``prune-k{k}-{strategy}``; meta ``{strategy, k, removed_layers, eval_ppl, …}``. Sub-layer
    selections are saved through ``frankenllama.sublayer`` (load them with ``load_sublayer_pruned``).
    A variant already saved from the same configuration is kept as it is.
    """
    curves = pruning_stage(config)
    model, tokenizer = shared_model(config.similarity.model)
    existing = {v.name: v.meta for v in list_variants()}
    names = []
    for k in ks:
        best, _ = best_selection(config, k)
        for strategy in dict.fromkeys((best, *also)):
            row = curves[(curves.strategy == strategy) & (curves.k == k)].iloc[0]
            name = f"prune-k{k}-{strategy}"
            meta = {"strategy": strategy, "k": k, "removed_layers": list(row.layers), "removed_units": list(row.units),
                    "granularity": row.granularity, "eval_ppl": float(row.eval_ppl), "best_at_k": strategy == best,
                    "pruning_config_key": config_key("pruning", config, CODE), "config": config}
            names.append(name)
            saved = existing.get(name, {}).get("pruning_config_key") == meta["pruning_config_key"]
            if saved and intact(variant_path(name)):
                continue  # a damaged copy was quarantined by ``intact`` and is saved again
            pruned = drop_layers(model, row.units) if row.granularity == "layer" else prune_sublayers(model, row.units)
            save_variant(name, pruned, tokenizer, meta, seed=config.seed)
            del pruned
    return names
