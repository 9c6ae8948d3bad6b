"""The selection context: what a selection strategy may read, each measurement computed once.

``SelectionContext`` (formerly ``LayerScores``, which stays an alias) holds the residual-stream
similarity statistics and, for the strategies that measure the model itself, the model with its
calibration blocks. It offers cached measurements — the ablation scan, Taylor importance, a greedy
run, a swap search from given starts, a part-swap search from given blocks — and the importance
scores of the ``SCORES`` registry. It does not compose strategies: which starts a search gets and
which strategy feeds which is ``frankenllama.selection``'s business.

Scores (registry ``SCORES``; every score is an *importance*, one number per unit, higher = keep):

* ``"ablation-nll"`` — one-unit-out ablation: the increase of the mean next-token NLL on the
  calibration blocks when unit ℓ alone is bypassed, ``ΔNLL_ℓ = NLL(θ∖ℓ) − NLL(θ)`` (the true quantity
  the proxies try to predict; SLEB's first step, Song et al. 2024, arXiv:2402.09025).
* ``"ablation-ppl"`` — the same as a perplexity increase, ``exp(NLL(θ∖ℓ)) − exp(NLL(θ))``.
* ``"ablation-kl"`` — the mean per-token ``KL(p_θ ‖ p_θ∖ℓ)`` between the full model's next-token
  distribution and the ablated one's.
* ``"taylor"`` — first-order Taylor importance ``Σ_{w ∈ block ℓ} |w · ∂L/∂w|`` of the calibration loss
  (Kim et al. 2024, "Shortened LLaMA", arXiv:2402.02834); the "+" of Taylor+ (never removing the
  first and last blocks) is a selection rule, see ``frankenllama.selection``.
* ``"block-influence"`` — ShortGPT's ``BI_ℓ = 1 − E_t cos(x_ℓ, x_ℓ+1)`` (Men et al. 2024,
  arXiv:2403.03853), from the foundation's ``LayerSimilarity``.
* ``"angular"`` / ``"angular-all"`` — the one-block angular distance ``d(ℓ, 1)`` of Gromov et al. 2024
  (arXiv:2403.17887) on the last token / averaged over all tokens.
* ``"sublayer-nll"`` — one-sub-block-out ΔNLL over the 2L attention and MLP sub-blocks (BlockPruner's
  first step, Zhong et al. 2024, arXiv:2406.10594).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from frankenllama.models import decoder_layers
from frankenllama.scoring.measures import AblationScan, TaylorScores, ablation_scan, taylor_scores
from frankenllama.scoring.search import GreedyResult, SwapResult, greedy_removal, part_swap_search, swap_search
from frankenllama.similarity import LayerSimilarity, layer_similarity
from frankenllama.streams import check_place
from frankenllama.units import Granularity, layer_units, num_units


class UnknownScoreError(KeyError):
    """A score name that is not a key of ``SCORES``."""


Store = Callable[[str, dict[str, Any], Callable[[], dict[str, np.ndarray]]], dict[str, np.ndarray]]
Peek = Callable[[str, dict[str, Any]], "dict[str, np.ndarray] | None"]  # a stored entry, or None: computes nothing


def _greedy_result(granularity: Granularity, arrays: dict[str, np.ndarray]) -> GreedyResult:
    return GreedyResult(granularity, [int(u) for u in arrays["order"]], [float(v) for v in arrays["nll"]],
                        float(arrays["base_nll"]), [int(v) for v in arrays["evaluated"]])


def _memory_store() -> Store:
    memo: dict[str, dict[str, np.ndarray]] = {}

    def store(kind: str, params: dict[str, Any], compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        key = f"{kind}:{sorted(params.items())}"
        if key not in memo:
            memo[key] = compute()
        return memo[key]

    return store


def _sorted_ids(units: Sequence[int]) -> list[int]:
    return sorted(int(u) for u in units)


class SelectionContext:
    """What a selection strategy may read: the similarity statistics, lazily computed scores, and the
    model with its calibration blocks for the strategies that measure the model itself.

    Pass it to ``frankenllama.select_layers`` in place of a bare ``LayerSimilarity``. Measurements
    are computed on first use and kept; ``store`` (``frankenllama.stages`` passes one) keeps them on
    disk under a key derived from the stage config, so a later notebook reads them instead.

    Args:
        similarity: residual-stream statistics; computed from ``model`` and ``calib`` when omitted.
        model: the model whose blocks are scored (read-only: nothing is modified).
        calib: ``(N, T)`` calibration token blocks (the ``calib`` split).
        batch_size: blocks per forward pass.
        shortlist: candidate shortlist of the greedy searches (``None``: exact; see ``greedy_removal``).
        store: ``store(kind, params, compute) -> arrays`` cache; in-memory by default.
        peek: ``peek(kind, params) -> arrays | None``, what ``store`` holds without computing: lets a greedy
            search start from a run of another depth stored by an earlier context (``greedy``).
        progress: show progress bars of the long computations.
        greedy_steps: run the greedy searches to at least this many steps whatever k is asked, so
            that one (cached) run serves every k (they are nested).
        sublayer_blocks: measure sub-blocks (2L units, twice the work) on only the first this many
            calibration blocks (``None``: all).
        jackknife: compute Taylor's leave-one-out replicates along with its score (``TaylorScores.loo``).
        stream_store: where the similarity pass, the scan and the searches keep cached residual
            streams: ``"device"`` (default), ``"cpu"`` (pinned with CUDA) or ``"disk"`` (a temporary
            folder under ``stream_dir``); see ``frankenllama.streams``. Results do not depend on it
            (beyond float rounding), so it is not part of any cache key. The model itself may be
            spread or offloaded with accelerate's ``device_map``.
        scans, taylor: results computed before (e.g. ``AblationScan.subset`` of a larger scan); a
            context holding them selects without a model.
    """

    def __init__(
        self,
        similarity: LayerSimilarity | None = None,
        model: nn.Module | None = None,
        calib: torch.Tensor | None = None,
        batch_size: int = 4,
        shortlist: int | None = None,
        store: Store | None = None,
        progress: bool = False,
        scans: Sequence[AblationScan] = (),
        taylor: TaylorScores | None = None,
        greedy_steps: int | None = None,
        sublayer_blocks: int | None = None,
        jackknife: bool = False,
        stream_store: str = "device",
        stream_dir: str | None = None,
        peek: Peek | None = None,
    ):
        if similarity is None and scans:
            similarity = next(iter(scans)).similarity()
        if similarity is None and (model is None or calib is None):
            raise ValueError("SelectionContext needs a LayerSimilarity, or a model and calibration blocks to compute one")
        if (model is None) != (calib is None):
            raise ValueError("give both model and calib, or neither")
        if model is not None and similarity is not None and len(decoder_layers(model)) != similarity.num_layers:
            raise ValueError(
                f"the similarity describes {similarity.num_layers} layers but the model has {len(decoder_layers(model))}"
            )
        self._similarity = similarity
        self.model = model
        self.calib = calib
        self.batch_size = batch_size
        self.shortlist = shortlist
        self.store = store or _memory_store()
        self.peek = peek
        self.progress = progress
        self._greedy: dict[str, GreedyResult] = {}
        self._scans = {scan.granularity: scan for scan in scans}
        self._taylor = taylor
        self.greedy_steps = greedy_steps
        self.sublayer_blocks = sublayer_blocks
        self.jackknife = jackknife
        check_place(stream_store)
        self.streams = {"stream_store": stream_store, "stream_dir": stream_dir}  # never in a cache key

    @property
    def similarity(self) -> LayerSimilarity:
        if self._similarity is None:
            self._similarity = layer_similarity(self.model, self.calib, batch_size=self.batch_size, **self.streams)
        return self._similarity

    def calib_for(self, granularity: Granularity) -> torch.Tensor:
        """The calibration blocks measured at this granularity."""
        assert self.calib is not None
        return self.calib if granularity == "layer" or self.sublayer_blocks is None else self.calib[: self.sublayer_blocks]

    @property
    def num_layers(self) -> int:
        return self._similarity.num_layers if self._similarity is not None else len(decoder_layers(self.model))

    def require_model(self, what: str) -> None:
        if self.model is None:
            raise ValueError(
                f"{what} measures the model itself: build SelectionContext(similarity, model=model, calib=calib_blocks) "
                "and pass that to select_layers instead of a bare LayerSimilarity"
            )

    def _blocks_param(self, granularity: Granularity) -> dict[str, Any]:
        """The cache-key entry of the sub-block measurements' calibration subset (none at layer granularity)."""
        return {"blocks": self.sublayer_blocks} if granularity == "sublayer" else {}

    def scan(self, granularity: Granularity = "layer") -> AblationScan:
        """The one-unit-out ablation scan (KL only at layer granularity), computed once."""
        if granularity in self._scans:
            return self._scans[granularity]
        self.require_model("the ablation scan")
        if self.num_layers < 2:
            raise ValueError(f"ablation needs a model with at least 2 layers (this one has {self.num_layers})")
        params = {"batch_size": self.batch_size} | self._blocks_param(granularity)
        arrays = self.store(f"ablation-{granularity}", params, lambda: ablation_scan(
            self.model, self.calib_for(granularity), granularity, self.batch_size, kl=granularity == "layer", progress=self.progress,
            **self.streams).to_arrays())
        self._scans[granularity] = AblationScan.from_arrays(arrays)
        return self._scans[granularity]

    def taylor(self) -> TaylorScores:
        """Taylor importances (with jackknife replicates when the context asks for them), computed once."""
        if self._taylor is not None:
            return self._taylor
        self.require_model("Taylor importance")
        arrays = self.store("taylor", {"jackknife": self.jackknife, "batch_size": self.batch_size}, lambda: taylor_scores(
            self.model, self.calib, self.batch_size, jackknife=self.jackknife, progress=self.progress).to_arrays())
        self._taylor = TaylorScores.from_arrays(arrays)
        return self._taylor

    def greedy(self, k: int, granularity: Granularity = "layer") -> GreedyResult:
        """The iterative greedy search (``greedy_removal``) run to at least ``k`` steps (reusing and extending shorter runs).

        The runs are nested (the first steps of a deeper run are a shallower one), so with ``peek`` the
        deepest run stored under any depth serves: read when it is deep enough, extended otherwise.
        """
        self.require_model("the iterative greedy search")
        units = num_units(self.num_layers, granularity)
        k = min(max(k, self.greedy_steps or 0), units - 1)
        kind, rest = f"greedy-{granularity}", {"shortlist": self.shortlist, "batch_size": self.batch_size} | self._blocks_param(granularity)
        known = self._greedy.get(granularity)
        if known is None and self.peek is not None:
            stored = (self.peek(kind, {"k": depth} | rest) for depth in range(units - 1, 0, -1))
            arrays = next((a for a in stored if a is not None), None)
            if arrays is not None:
                known = self._greedy[granularity] = _greedy_result(granularity, arrays)
        if known is not None and len(known.order) >= k:
            return known

        def compute() -> dict[str, np.ndarray]:
            prefix = [] if known is None else known.order
            first = None
            if not prefix:  # the first greedy step is the one-unit-out ablation: read it from the scan
                scan = self.scan(granularity)
                first = scan.base_mean_nll() + scan.delta_nll()
            run = greedy_removal(self.model, self.calib_for(granularity), k, granularity, self.batch_size, shortlist=self.shortlist,
                                 start=prefix, first=first if not prefix else None, progress=self.progress, **self.streams)
            nll = ([] if known is None else known.nll) + run.nll
            base = run.base_nll if known is None else known.base_nll
            return {"order": np.array(run.order), "nll": np.array(nll), "base_nll": np.array(base),
                    "evaluated": np.array(([] if known is None else known.evaluated) + run.evaluated)}

        result = self._greedy[granularity] = _greedy_result(granularity, self.store(kind, {"k": k} | rest, compute))
        return result

    def swap(self, start: Sequence[int], alternatives: Sequence[Sequence[int]] = ()) -> SwapResult:
        """``swap_search`` over blocks from the best (on calibration NLL) of ``start`` and ``alternatives`` (cached)."""
        self.require_model("the swap search")
        start = _sorted_ids(start)
        others = sorted({tuple(_sorted_ids(s)) for s in alternatives} - {tuple(start)})

        def compute() -> dict[str, np.ndarray]:
            return swap_search(self.model, self.calib, start, self.batch_size, progress=self.progress,
                               alternatives=others, **self.streams).to_arrays()

        params = {"k": len(start), "start": start, "others": others, "batch_size": self.batch_size}
        return SwapResult.from_arrays(self.store("swap", params, compute))

    def part_swap(self, layers: Sequence[int], width: int = 4, rounds: int = 1) -> SwapResult:
        """``part_swap_search`` from the sub-blocks of whole blocks ``layers``, cost = one-sub-block-out ΔNLL (cached).

        At most ``rounds`` swaps: each round costs ``width`` × (removed attention sub-blocks)
        calibration passes. One by default, the 2-core CPU budget (notebook 02 within the 30-minute
        chain). What it costs on SmolLM2: at k = 3 and 9 a second round finds no better swap; at k = 6
        it trades the attention put back for another (5.attn → 7.attn), eval perplexity 31.22 → 30.30.
        Raise it to run the local search until no swap helps.
        """
        self.require_model("the part-swap search")
        layers = _sorted_ids(layers)
        start = layer_units(layers)
        cost = self.scan("sublayer").delta_nll()

        def compute() -> dict[str, np.ndarray]:
            return part_swap_search(self.model, self.calib, start, cost, width, batch_size=self.batch_size,
                                    max_rounds=rounds, progress=self.progress, **self.streams).to_arrays()

        params = {"k": len(layers), "start": start, "width": width, "rounds": rounds, "cost_blocks": self.sublayer_blocks,
                  "batch_size": self.batch_size}
        return SwapResult.from_arrays(self.store("part-swap", params, compute))

    def score(self, name: str) -> np.ndarray:
        """Importance of every unit under score ``name`` (a key of ``SCORES``); higher means keep."""
        if name not in SCORES:
            raise UnknownScoreError(f"unknown score {name!r}; choose one of {sorted(SCORES)}")
        return SCORES[name].compute(self)


LayerScores = SelectionContext  # the name before issue 10; kept for notebooks and callers that use it


@dataclass(frozen=True)
class Score:
    """A registered importance score: how to compute it from a ``SelectionContext``, what it is, where it comes from.

    ``granularity``: ``"layer"`` (L values) or ``"sublayer"`` (2L); ``kind``: ``"proxy"`` (reads the
    similarity statistics only) or ``"measured"`` (measures the model: ablation, gradients).
    ``what`` and ``cite`` fill ``frankenllama.selection.methods_table``.
    """

    compute: Callable[[SelectionContext], np.ndarray]
    granularity: str
    kind: str
    what: str
    cite: str


_GROMOV = "Gromov et al. 2024, arXiv:2403.17887"
_SLEB = "Song et al. 2024, arXiv:2402.09025"

SCORES: dict[str, Score] = {
    "block-influence": Score(lambda c: c.similarity.block_influence, "layer", "proxy",
                             "1 − mean cosine between a block's input and output",
                             "ShortGPT, Men et al. 2024, arXiv:2403.03853"),
    "angular": Score(lambda c: c.similarity.angular_distance("last")[:, 0], "layer", "proxy",
                     "angular distance d(ℓ,1) across one block, last token", f"{_GROMOV} (d(ℓ,1), last token)"),
    "angular-all": Score(lambda c: c.similarity.angular_distance("all")[:, 0], "layer", "proxy",
                         "angular distance d(ℓ,1) across one block, all tokens", f"{_GROMOV} (d(ℓ,1), all tokens)"),
    "ablation-nll": Score(lambda c: c.scan().delta_nll(), "layer", "measured",
                          "calibration NLL increase with the block alone removed",
                          f"one-layer-out ΔNLL (SLEB step 1, {_SLEB})"),
    "ablation-ppl": Score(lambda c: c.scan().delta_ppl(), "layer", "measured",
                          "calibration perplexity increase with the block alone removed",
                          f"one-layer-out ΔPPL (SLEB step 1, {_SLEB})"),
    "ablation-kl": Score(lambda c: c.scan().mean_kl(), "layer", "measured",
                         "mean per-token KL of the full model's next-token distribution to the ablated one's",
                         f"this workbook (one-layer-out KL to the full model; cf. SLEB, {_SLEB})"),
    "taylor": Score(lambda c: c.taylor().score, "layer", "measured", "Σ|w · ∂L/∂w| over the block's weights",
                    "Taylor, Kim et al. 2024, arXiv:2402.02834"),
    "sublayer-nll": Score(lambda c: c.scan("sublayer").delta_nll(), "sublayer", "measured",
                          "calibration NLL increase with the attention or MLP sub-block alone removed",
                          "one-sub-block-out ΔNLL (BlockPruner, Zhong et al. 2024, arXiv:2406.10594)"),
}
