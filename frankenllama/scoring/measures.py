"""The measures behind the scores: the one-unit-out ablation scan and Taylor importance.

* ``ablation_scan`` — one-unit-out ablation: the per-sample next-token NLL of the calibration
  blocks with unit u alone bypassed (``ΔNLL_u = NLL(θ∖u) − NLL(θ)``, SLEB's first step, Song et al.
  2024, arXiv:2402.09025; per sub-block, BlockPruner's, Zhong et al. 2024, arXiv:2406.10594), and the
  per-token ``KL(p_θ ‖ p_θ∖u)``, each computed from the cached stream entering u's block
  (``frankenllama.scoring.trunk``).
* ``taylor_scores`` — first-order Taylor importance ``Σ_{w ∈ block ℓ} |w · ∂L/∂w|`` of the calibration
  loss (Kim et al. 2024, "Shortened LLaMA", arXiv:2402.02834), with optional jackknife replicates.

The per-sample results (``AblationScan``) keep one row per calibration block, so bootstrap
intervals and calibration-subset studies re-aggregate them without another forward pass.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from frankenllama.loss import next_token_nll
from frankenllama.models import decoder_layers, is_offloaded, model_device
from frankenllama.scoring.trunk import Trunk
from frankenllama.streams import unit_chunks
from frankenllama.similarity import LayerSimilarity
from frankenllama.units import Granularity, bypass_flags, layer_of, num_units, removal_mask


@dataclass(frozen=True)
class AblationScan:
    """Per-sample results of one forward pass plus one truncated pass per unit.

    Arrays (N calibration blocks, U units, L blocks):
    ``base_nll`` (N,) NLL sum of the unpruned model; ``nll`` (N, U) NLL sum with unit u bypassed;
    ``kl`` (N, U) sum over positions of ``KL(p_full ‖ p_ablated)`` (NaN when not computed);
    ``n_pred`` (N,) predictions per sample; ``cos``/``ang_all`` (N, L+1, L+1) per-sample sums over
    tokens of the cosine and of ``arccos(cos)/π`` between residual states; ``ang_last`` (N, L+1, L+1)
    the same at the last token; ``n_tok`` (N,) tokens per sample.
    """

    granularity: str
    base_nll: np.ndarray
    nll: np.ndarray
    kl: np.ndarray
    n_pred: np.ndarray
    cos: np.ndarray
    ang_all: np.ndarray
    ang_last: np.ndarray
    n_tok: np.ndarray

    @property
    def n_samples(self) -> int:
        return len(self.base_nll)

    def _rows(self, samples: Sequence[int] | np.ndarray | None) -> np.ndarray:
        return np.arange(self.n_samples) if samples is None else np.asarray(samples)

    def delta_nll(self, samples: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """``ΔNLL_u`` (U,): mean NLL increase over the given samples (with repeats: a bootstrap draw)."""
        rows = self._rows(samples)
        count = self.n_pred[rows].sum()
        return (self.nll[rows].sum(0) - self.base_nll[rows].sum()) / count

    def base_mean_nll(self, samples: Sequence[int] | np.ndarray | None = None) -> float:
        rows = self._rows(samples)
        return float(self.base_nll[rows].sum() / self.n_pred[rows].sum())

    def delta_ppl(self, samples: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        base = self.base_mean_nll(samples)
        return np.exp(base + self.delta_nll(samples)) - math.exp(base)

    def mean_kl(self, samples: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        rows = self._rows(samples)
        return self.kl[rows].sum(0) / self.n_pred[rows].sum()

    def similarity(self, samples: Sequence[int] | np.ndarray | None = None) -> LayerSimilarity:
        """The foundation's ``LayerSimilarity`` aggregated over the given samples."""
        rows = self._rows(samples)
        n_tok = int(self.n_tok[rows].sum())
        cosine = self.cos[rows].sum(0) / n_tok
        ang = self.ang_all[rows].sum(0) / n_tok
        last = self.ang_last[rows].sum(0) / len(rows)
        np.fill_diagonal(cosine, 1.0)
        np.fill_diagonal(ang, 0.0)
        np.fill_diagonal(last, 0.0)
        return LayerSimilarity(cosine, ang, last, n_tok, len(rows))

    def subset(self, samples: Sequence[int] | np.ndarray) -> AblationScan:
        """The scan restricted to some calibration samples (a smaller or resampled calibration set)."""
        rows = np.asarray(samples)
        return AblationScan(self.granularity, *(getattr(self, k)[rows] for k in (
            "base_nll", "nll", "kl", "n_pred", "cos", "ang_all", "ang_last", "n_tok")))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ("base_nll", "nll", "kl", "n_pred", "cos", "ang_all", "ang_last", "n_tok")} | {
            "granularity": np.array(self.granularity)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> AblationScan:
        return cls(granularity=str(arrays["granularity"]), **{k: arrays[k] for k in arrays if k != "granularity"})


def _pair_stats(trunk: Trunk, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample sums of cos and arccos/π over tokens, and the last-token arccos/π, of batch ``b``'s
    cached streams: 3 × (B, L+1, L+1), a token slice of every state at a time (``unit_chunks``)."""
    n, T = trunk.num_layers + 1, trunk.batches[b].ids.shape[1]
    state = lambda i, tokens: trunk.states.get((i, b), tokens)  # noqa: E731
    cos_sum = ang_sum = ang_last = None
    for tokens, unit in unit_chunks(state, n, T, trunk.device, whole=trunk.stream_store == "device"):  # (S, B, t, H)
        cos = torch.einsum("ibth,jbth->btij", unit, unit).clamp_(-1.0, 1.0)  # (B, t, S, S)
        ang = torch.arccos(cos) / math.pi
        c, a = cos.sum(1).double(), ang.sum(1).double()
        cos_sum, ang_sum = (c, a) if cos_sum is None else (cos_sum + c, ang_sum + a)
        if tokens.stop == T:
            ang_last = ang[:, -1].double()
    return cos_sum.cpu(), ang_sum.cpu(), ang_last.cpu()


@torch.no_grad()
def ablation_scan(
    model: nn.Module,
    input_ids: torch.Tensor,
    granularity: Granularity = "layer",
    batch_size: int = 4,
    kl: bool = True,
    progress: bool = False,
    stream_store: str = "device",
    stream_dir: str | None = None,
) -> AblationScan:
    """One-unit-out ablation of every block (or sub-block) on ``(N, T)`` calibration blocks.

    For each unit u, the per-sample NLL with u bypassed and (``kl``) the summed per-token
    ``KL(p_full ‖ p_∖u)``, each computed from the cached stream entering u's block (see module doc).
    The same pass records per-sample residual-stream similarity sums, from which
    ``AblationScan.similarity`` rebuilds the foundation's ``LayerSimilarity`` for any sample subset.
    ``stream_store``/``stream_dir``: where one batch's streams wait (``frankenllama.streams``).
    """
    L = len(decoder_layers(model))
    if L < 2:
        raise ValueError(f"ablation needs a model with at least 2 layers (this one has {L}): removing its only block leaves no model")
    U = num_units(L, granularity)
    trunk = Trunk(model, input_ids, batch_size, stream_store=stream_store, stream_dir=stream_dir)
    N = trunk.n_samples
    base = np.zeros(N)
    nll = np.zeros((N, U))
    kls = np.full((N, U), np.nan)
    cos = np.zeros((N, L + 1, L + 1))
    ang = np.zeros_like(cos)
    last = np.zeros_like(cos)
    empty = removal_mask((), L, granularity)
    total = len(trunk.batches) * U
    bar = tqdm(total=total, desc=f"ablation ({granularity})", disable=not progress, leave=False)
    try:
        for b, rows in enumerate(trunk.sample_slices):
            trunk.refresh(empty, batches=[b])  # this batch's streams, where stream_store says
            c, a, la = _pair_stats(trunk, b)
            cos[rows], ang[rows], last[rows] = c.numpy(), a.numpy(), la.numpy()
            final = trunk.states[L][b]
            base[rows] = trunk.nll(final, b).numpy()
            ref = F.log_softmax(trunk.logits(final), dim=-1) if kl else None  # (B, T-1, V)
            del final
            for u in range(U):
                layer = layer_of(u, granularity)
                x = trunk.run(trunk.states[layer][b], b, layer, empty, first=bypass_flags(u, granularity, empty))
                nll[rows, u] = trunk.nll(x, b).numpy()
                if kl:
                    for i in range(x.shape[0]):  # per sample: bounds memory to one (T-1, V) pair
                        logp = F.log_softmax(trunk.logits(x[i : i + 1])[0], dim=-1).to(ref.device)
                        kls[rows.start + i, u] = float((ref[i].exp() * (ref[i] - logp)).sum())
                bar.update()
            del ref
            trunk.release(b)
    finally:
        if trunk.states is not None:
            trunk.states.close()
    bar.close()
    return AblationScan(granularity, base, nll, kls, trunk.n_predictions(), cos, ang, last,
                        np.full(N, input_ids.shape[1], dtype=np.int64))


# --------------------------------------------------------------------------------------------------
# Taylor importance (Shortened LLaMA)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaylorScores:
    """``score`` (L,): ``Σ_{w ∈ block ℓ} |w · g_w|`` with g the gradient of the mean calibration NLL;
    ``loo`` (N, L): the same with calibration sample i left out (delete-one jackknife), or empty."""

    score: np.ndarray
    loo: np.ndarray

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"score": self.score, "loo": self.loo}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> TaylorScores:
        return cls(arrays["score"], arrays["loo"])


def _block_params(model: nn.Module) -> list[list[nn.Parameter]]:
    return [list(block.parameters()) for block in decoder_layers(model)]


@contextlib.contextmanager
def _grads_on(params: list[nn.Parameter]) -> Iterator[None]:
    saved = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        yield
    finally:
        for p, flag in zip(params, saved):
            p.requires_grad_(flag)
            p.grad = None


def taylor_scores(
    model: nn.Module, input_ids: torch.Tensor, batch_size: int = 4, jackknife: bool = False, progress: bool = False
) -> TaylorScores:
    """Taylor importance of every block (Kim et al. 2024, arXiv:2402.02834), optionally with jackknife replicates.

    The gradient is that of the token-weighted mean NLL over all calibration blocks (gradients
    accumulate over batches before the absolute value is taken, as in the paper). With
    ``jackknife``, a second pass computes each sample's own gradient ``g_i`` and the score of the
    leave-one-out gradient ``(C·g − C_i·g_i)/(C − C_i)`` — the replicates behind the confidence
    interval of Taylor's rank correlation (the score is not a sum over samples, so it cannot be
    bootstrapped from per-sample numbers).
    """
    if is_offloaded(model):
        raise ValueError("Taylor importance needs gradients of every weight, and this model has weights offloaded by "
                         "accelerate (on 'meta'): load it without offload (device_map over devices that hold it), or use "
                         "the ablation scores, which run on offloaded models")
    blocks = _block_params(model)
    flat = [p for ps in blocks for p in ps]
    others = [p for p in model.parameters() if all(p is not q for q in flat)]
    device = model_device(model)
    N, T = input_ids.shape
    count = N * (T - 1)

    def loss_of(ids: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=ids.to(device), use_cache=False).logits  # (B, T, V)
        return next_token_nll(logits, ids).sum()

    def score_of(grads: list[torch.Tensor]) -> np.ndarray:
        out, i = np.zeros(len(blocks)), 0
        for layer, ps in enumerate(blocks):
            for p in ps:
                out[layer] += float((p.detach() * grads[i]).abs().sum())
                i += 1
        return out

    frozen = [p.requires_grad for p in others]
    for p in others:
        p.requires_grad_(False)
    try:
        with _grads_on(flat), torch.enable_grad():
            steps = range(0, N, batch_size)
            for start in tqdm(steps, desc="taylor", disable=not progress, leave=False):
                (loss_of(input_ids[start : start + batch_size]) / count).backward()
            total = [p.grad.detach().clone() for p in flat]  # gradient of the mean NLL, g
            score = score_of(total)
            loo = np.zeros((0, len(blocks)))
            if jackknife and N > 1:
                loo = np.zeros((N, len(blocks)))
                per = T - 1
                for i in tqdm(range(N), desc="taylor jackknife", disable=not progress, leave=False):
                    for p in flat:
                        p.grad = None
                    loss_of(input_ids[i : i + 1]).backward()  # g_i of the NLL sum of sample i
                    grads = [(count * g - p.grad) / (count - per) for g, p in zip(total, flat)]
                    loo[i] = score_of(grads)
                    del grads
            del total
    finally:
        for p, flag in zip(others, frozen):
            p.requires_grad_(flag)
    return TaylorScores(score, loo)


