"""How much each block (or sub-block) matters: true ablation scores, Taylor+, and the cheap proxies.

Every score is an *importance*: one number per unit, higher means "keep it". A unit is a whole
decoder block (``granularity="layer"``, ids ``0 … L-1``) or, for sub-layer pruning, an attention or
MLP sub-block (``granularity="sublayer"``, ids ``2ℓ`` = attention of block ℓ, ``2ℓ+1`` = its MLP; see
``frankenllama.sublayer``).

Scores (registry ``SCORES``):

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

How the ablation is computed without recomputing what is known: ``Trunk`` runs the calibration
blocks through the model once and keeps the residual stream entering every block; the ablation of
unit ℓ starts from the stored stream entering block ℓ and runs only blocks ℓ … L−1 (with ℓ bypassed),
the final norm and the LM head. ``greedy_removal`` (SLEB; BlockPruner at sub-layer granularity,
Zhong et al. 2024, arXiv:2406.10594) does the same at every step of the iterative search and, once
a unit is chosen, refreshes only the streams after it.

The per-sample results (``AblationScan``) keep one row per calibration block, so bootstrap
intervals and calibration-subset studies re-aggregate them without another forward pass.
Calibration blocks are full-length token blocks (no padding), as ``frankenllama.data`` makes them.
"""

from __future__ import annotations

import bisect
import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers.masking_utils import create_causal_mask

from frankenllama.models import decoder_layers, model_device
from frankenllama.similarity import LayerSimilarity, layer_similarity

Granularity = Literal["layer", "sublayer"]
GRANULARITIES: tuple[str, ...] = ("layer", "sublayer")
ATTN, MLP = 0, 1  # sub-block id = 2 * layer + part
BOUND_VOCAB = 4096  # tokens scored by the searches' NLL lower bound (besides the targets); see ``Trunk.total_nll``
_ROUNDING = 1e-5  # relative margin for float32 rounding when a lower bound is compared with an exact total


class UnknownScoreError(KeyError):
    """A score name that is not a key of ``SCORES``."""


def num_units(num_layers: int, granularity: Granularity) -> int:
    """How many removable units an L-block model has at this granularity (L or 2L)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; use one of {GRANULARITIES}")
    return num_layers if granularity == "layer" else 2 * num_layers


def removal_mask(units: Sequence[int], num_layers: int, granularity: Granularity) -> np.ndarray:
    """``(L, 2)`` boolean array: ``mask[ℓ, ATTN]`` / ``mask[ℓ, MLP]`` is True where that sub-block is removed."""
    mask = np.zeros((num_layers, 2), dtype=bool)
    for u in units:
        if granularity == "layer":
            mask[u, :] = True
        else:
            mask[u // 2, u % 2] = True
    return mask


# --------------------------------------------------------------------------------------------------
# Running a trunk block by block from cached residual streams
# --------------------------------------------------------------------------------------------------


@dataclass
class _Batch:
    ids: torch.Tensor  # (B, T)
    position_ids: torch.Tensor  # (1, T)
    position_embeddings: tuple[torch.Tensor, torch.Tensor]
    causal_mask: Any  # whatever create_causal_mask returns for this shape (often None: SDPA is_causal)


class Trunk:
    """A llama-family model's trunk run block by block on fixed token blocks, with cached streams.

    ``states[ℓ][b]`` is the residual stream ``(B, T, H)`` entering block ℓ for batch b under the
    current removal mask (``states[L]`` leaves the last block, before the final norm). Bypassed
    sub-blocks are skipped exactly: a removed attention contributes nothing to the residual stream,
    which is what the physically pruned model (``frankenllama.sublayer``) computes.
    """

    def __init__(self, model: nn.Module, input_ids: torch.Tensor, batch_size: int = 4, bound_vocab: int = BOUND_VOCAB):
        if input_ids.dim() != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] < 2:
            raise ValueError(f"expected token blocks of shape (N >= 1, T >= 2), got {tuple(input_ids.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if bound_vocab < 0:
            raise ValueError(f"bound_vocab must be non-negative (0: no vocabulary bound), got {bound_vocab}")
        self.model = model
        self.bound_vocab = bound_vocab
        self._shortlist: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None
        self.layers = decoder_layers(model)
        self.num_layers = len(self.layers)
        self.device = model_device(model)
        self.input_ids = input_ids
        self.batches: list[_Batch] = []
        self.mask = np.zeros((self.num_layers, 2), dtype=bool)
        self.states: list[list[torch.Tensor]] | None = None
        trunk = model.model
        with torch.no_grad():
            for start in range(0, len(input_ids), batch_size):
                ids = input_ids[start : start + batch_size].to(self.device)
                pos = torch.arange(ids.shape[1], device=self.device).unsqueeze(0)
                probe = trunk.embed_tokens(ids[:, :1]).expand(ids.shape[0], ids.shape[1], -1)  # dtype/shape only
                pe = trunk.rotary_emb(probe, position_ids=pos)
                causal = create_causal_mask(
                    config=model.config, inputs_embeds=probe, attention_mask=None, cache=None, position_ids=pos
                )
                self.batches.append(_Batch(ids, pos, pe, causal))
        self.sample_slices = [slice(s, s + len(b.ids)) for s, b in zip(range(0, len(input_ids), batch_size), self.batches)]

    @property
    def n_samples(self) -> int:
        return len(self.input_ids)

    def embed(self, b: int) -> torch.Tensor:
        return self.model.model.embed_tokens(self.batches[b].ids)  # (B, T, H)

    def block(self, layer: int, x: torch.Tensor, b: int, attn: bool = True, mlp: bool = True) -> torch.Tensor:
        """Block ``layer`` applied to ``x`` with its attention and/or MLP bypassed where False."""
        if not (attn or mlp):
            return x
        batch = self.batches[b]
        block = self.layers[layer]
        kwargs = dict(attention_mask=batch.causal_mask, position_embeddings=batch.position_embeddings,
                      position_ids=batch.position_ids, cache=None, use_cache=False)
        if attn and mlp:
            return block(x, **kwargs)
        if attn:
            out, _ = block.self_attn(hidden_states=block.input_layernorm(x), **kwargs)
            return x + out
        return x + block.mlp(block.post_attention_layernorm(x))

    def run(self, x: torch.Tensor, b: int, start: int, mask: np.ndarray, first: tuple[bool, bool] | None = None) -> torch.Tensor:
        """Run blocks ``start … L-1`` under removal ``mask``; ``first`` overrides (attn, mlp) of block ``start``."""
        for layer in range(start, self.num_layers):
            keep_attn, keep_mlp = (not mask[layer, ATTN], not mask[layer, MLP])
            if layer == start and first is not None:
                keep_attn, keep_mlp = first
            x = self.block(layer, x, b, keep_attn, keep_mlp)
        return x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm and LM head, float32 logits of every position but the last: (B, T-1, V)."""
        h = self.model.model.norm(x[:, :-1])
        return self.model.lm_head(h).float()

    def nll(self, x: torch.Tensor, b: int) -> torch.Tensor:
        """Per-sample sum of next-token NLL (nats), float64, shape (B,), of the streams ``x`` leaving the last block."""
        return self._head_nll(self.model.model.norm(x[:, :-1]), b)

    def _head_nll(self, h: torch.Tensor, b: int) -> torch.Tensor:
        ids = self.batches[b].ids
        out = torch.empty(len(ids), dtype=torch.float64)
        for i in range(len(ids)):  # one sample at a time bounds the (T, V) logits in memory
            logits = self.model.lm_head(h[i]).float()  # (T-1, V)
            out[i] = F.cross_entropy(logits, ids[i, 1:], reduction="sum").double().cpu()
        return out

    def _vocab(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The lower bound's tokens: LM-head rows, bias and each calibration target's row among them.

        The targets of the calibration blocks plus the ``bound_vocab`` tokens to which the model
        gives the most probability in total, under the mask of the first bounded evaluation (the
        cached streams leaving the last block). Chosen once: any token set holding the targets gives
        a valid bound, and a search's later, more pruned models predict much the same tokens.
        """
        if self._shortlist is None:
            assert self.states is not None, "call refresh() first"
            head = self.model.lm_head
            mass = torch.zeros(head.weight.shape[0], dtype=torch.float64, device=self.device)
            for b in range(len(self.batches)):
                h = self.model.model.norm(self.states[self.num_layers][b][:, :-1])
                for i in range(len(h)):
                    mass += head(h[i]).float().softmax(-1).sum(0).double()
            targets = self.input_ids[:, 1:].reshape(-1).to(self.device)
            top = mass.topk(min(self.bound_vocab, len(mass))).indices
            tokens = torch.unique(torch.cat([targets, top]))
            where = torch.full((len(mass),), -1, dtype=torch.long, device=self.device)
            where[tokens] = torch.arange(len(tokens), device=self.device)
            bias = None if head.bias is None else head.bias[tokens]
            self._shortlist = (head.weight[tokens].contiguous(), bias, where)
        return self._shortlist

    def _nll_lower_bound(self, h: torch.Tensor, b: int) -> torch.Tensor:
        """A lower bound of ``_head_nll(h, b)`` (B,), from the LM-head rows of a few thousand tokens only.

        For any token set S holding the target y, ``logsumexp_S z ≤ logsumexp_V z``, so
        ``logsumexp_S z − z_y ≤ −log p(y)``: exact arithmetic never overestimates a candidate's NLL.
        """
        weight, bias, where = self._vocab()
        targets = where[self.batches[b].ids[:, 1:]]  # (B, T-1) rows of the targets in the shortlist
        out = torch.empty(len(h), dtype=torch.float64)
        for i in range(len(h)):
            z = F.linear(h[i], weight, bias).float()  # (T-1, |S|)
            out[i] = (z.logsumexp(-1) - z.gather(-1, targets[i, :, None])[:, 0]).double().sum().cpu()
        return out

    @torch.no_grad()
    def total_nll(self, final: Callable[[int], torch.Tensor], bound: float = math.inf) -> torch.Tensor | None:
        """Per-sample NLL sums (N,) of the streams ``final(b)`` leaving the last block, batch by batch.

        ``bound``: return ``None`` as soon as the NLL summed over all samples is sure to exceed it.
        Each batch first gets the vocabulary lower bound (``_nll_lower_bound``, a fraction of the LM
        head's cost); the full LM head runs only if the lower bounds of all batches together stay
        under ``bound``, then batch by batch while what is exact so far plus the lower bounds of the
        rest stay under it. NLL is non-negative and the bounds never exceed it, so nothing that
        could come in under ``bound`` is cut; a total above it may still be returned complete.
        ``bound_vocab = 0`` checks the exact partial sums only. An infinite bound computes exactly.
        A bounded call keeps the normalised final streams of every batch until the head has run
        (N × T × H in the model's dtype).
        """
        n = len(self.batches)
        if math.isinf(bound) or self.bound_vocab == 0:
            out, partial = [], 0.0
            for b in range(n):
                out.append(self.nll(final(b), b))
                partial += float(out[-1].sum())
                if partial > bound and b < n - 1:
                    return None
            return torch.cat(out)
        limit = bound + _ROUNDING * abs(bound)  # float32 logits: never cut on rounding alone
        hidden, lower = [], []
        for b in range(n):
            hidden.append(self.model.model.norm(final(b)[:, :-1]))
            lower.append(float(self._nll_lower_bound(hidden[-1], b).sum()))
            if sum(lower) > limit:
                return None
        out, rest = [], sum(lower)
        for b in range(n):
            out.append(self._head_nll(hidden[b], b))
            rest += float(out[-1].sum()) - lower[b]
            if rest > limit and b < n - 1:
                return None
        return torch.cat(out)

    @torch.no_grad()
    def refresh(self, mask: np.ndarray, from_layer: int = 0, progress: bool = False) -> None:
        """Set the removal mask and recompute the cached streams entering blocks ``from_layer`` … L."""
        self.mask = np.array(mask, dtype=bool)
        if self.states is None:
            from_layer = 0
            self.states = [[torch.empty(0)] * len(self.batches) for _ in range(self.num_layers + 1)]
        for b in tqdm(range(len(self.batches)), desc="residual stream", disable=not progress, leave=False):
            x = self.embed(b) if from_layer == 0 else self.states[from_layer][b]
            self.states[from_layer][b] = x
            for layer in range(from_layer, self.num_layers):
                x = self.block(layer, x, b, not self.mask[layer, ATTN], not self.mask[layer, MLP])
                self.states[layer + 1][b] = x

    @torch.no_grad()
    def candidate_nll(self, unit: int, granularity: Granularity, bound: float = math.inf) -> torch.Tensor | None:
        """Per-sample NLL sums (N,) with ``unit`` bypassed on top of the current mask, from the cached stream.

        ``bound``: give up (return ``None``) once the total is sure to exceed it (``total_nll``); the
        search passes the best complete total so far and loses nothing.
        """
        assert self.states is not None, "call refresh() first"
        layer = unit if granularity == "layer" else unit // 2
        first = (False, False) if granularity == "layer" else (
            (False, not self.mask[layer, MLP]) if unit % 2 == ATTN else (not self.mask[layer, ATTN], False))
        return self.total_nll(lambda b: self.run(self.states[layer][b], b, layer, self.mask, first=first), bound)

    @torch.no_grad()
    def block_influence(self) -> np.ndarray:
        """``1 − mean cos(x_ℓ, x_ℓ+1)`` of every block under the current mask, from the cached streams (L,)."""
        assert self.states is not None, "call refresh() first"
        out = np.zeros(self.num_layers)
        for layer in range(self.num_layers):
            cos = [F.cosine_similarity(self.states[layer][b].float(), self.states[layer + 1][b].float(), dim=-1).mean()
                   for b in range(len(self.batches))]
            out[layer] = 1.0 - float(torch.stack(cos).mean())
        return out

    @torch.no_grad()
    def mask_nll(self, mask: np.ndarray, bound: float = math.inf) -> torch.Tensor | None:
        """Per-sample NLL sums (N,) of the model with removal ``mask``, from the first block where it differs from the current mask.

        Every block before that one sees exactly the cached stream (typically of the unpruned model:
        ``refresh`` with an empty mask, so the run starts at the first removed block). ``bound`` as in
        ``total_nll``.
        """
        assert self.states is not None, "call refresh() first"
        start = self.first_difference(mask)
        return self.total_nll(lambda b: self.run(self.states[start][b], b, start, mask), bound)

    def first_difference(self, mask: np.ndarray) -> int:
        """The first block whose sub-blocks ``mask`` removes differently from the current mask (L if none)."""
        changed = np.flatnonzero((np.asarray(mask, dtype=bool) != self.mask).any(axis=1))
        return int(changed[0]) if len(changed) else self.num_layers

    def n_predictions(self) -> np.ndarray:
        """Predictions per sample, (N,): every position but the first."""
        return np.full(self.n_samples, self.input_ids.shape[1] - 1, dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# One-unit-out ablation scan (with per-sample similarity statistics from the same pass)
# --------------------------------------------------------------------------------------------------


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


def _pair_stats(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample sums of cos and arccos/π over tokens, and the last-token arccos/π: 3 × (B, L+1, L+1)."""
    unit = F.normalize(torch.stack(states).float(), dim=-1)  # (L+1, B, T, H)
    cos = torch.einsum("ibth,jbth->btij", unit, unit).clamp_(-1.0, 1.0)  # (B, T, L+1, L+1)
    ang = torch.arccos(cos) / math.pi
    return cos.sum(1).double(), ang.sum(1).double(), ang[:, -1].double()


@torch.no_grad()
def ablation_scan(
    model: nn.Module,
    input_ids: torch.Tensor,
    granularity: Granularity = "layer",
    batch_size: int = 4,
    kl: bool = True,
    progress: bool = False,
) -> AblationScan:
    """One-unit-out ablation of every block (or sub-block) on ``(N, T)`` calibration blocks.

    For each unit u, the per-sample NLL with u bypassed and (``kl``) the summed per-token
    ``KL(p_full ‖ p_∖u)``, each computed from the cached stream entering u's block (see module doc).
    The same pass records per-sample residual-stream similarity sums, from which
    ``AblationScan.similarity`` rebuilds the foundation's ``LayerSimilarity`` for any sample subset.
    """
    L = len(decoder_layers(model))
    if L < 2:
        raise ValueError(f"ablation needs a model with at least 2 layers (this one has {L}): removing its only block leaves no model")
    U = num_units(L, granularity)
    trunk = Trunk(model, input_ids, batch_size)
    N = trunk.n_samples
    base = np.zeros(N)
    nll = np.zeros((N, U))
    kls = np.full((N, U), np.nan)
    cos = np.zeros((N, L + 1, L + 1))
    ang = np.zeros_like(cos)
    last = np.zeros_like(cos)
    empty = np.zeros((L, 2), dtype=bool)
    total = len(trunk.batches) * U
    bar = tqdm(total=total, desc=f"ablation ({granularity})", disable=not progress, leave=False)
    for b, rows in enumerate(trunk.sample_slices):
        states = [trunk.embed(b)]
        for layer in range(L):
            states.append(trunk.block(layer, states[-1], b))
        c, a, la = _pair_stats(states)
        cos[rows], ang[rows], last[rows] = c.numpy(), a.numpy(), la.numpy()
        base[rows] = trunk.nll(states[-1], b).numpy()
        ref = F.log_softmax(trunk.logits(states[-1]), dim=-1) if kl else None  # (B, T-1, V)
        for u in range(U):
            layer = u if granularity == "layer" else u // 2
            first = (False, False) if granularity == "layer" else ((False, True) if u % 2 == ATTN else (True, False))
            x = trunk.run(states[layer], b, layer, empty, first=first)
            nll[rows, u] = trunk.nll(x, b).numpy()
            if kl:
                for i in range(x.shape[0]):  # per sample: bounds memory to one (T-1, V) pair
                    logp = F.log_softmax(trunk.logits(x[i : i + 1])[0], dim=-1)
                    kls[rows.start + i, u] = float((ref[i].exp() * (ref[i] - logp)).sum())
            bar.update()
        del states, ref
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
    blocks = _block_params(model)
    flat = [p for ps in blocks for p in ps]
    others = [p for p in model.parameters() if all(p is not q for q in flat)]
    device = model_device(model)
    N, T = input_ids.shape
    count = N * (T - 1)

    def loss_of(ids: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=ids.to(device), use_cache=False).logits[:, :-1].float()
        return F.cross_entropy(logits.transpose(1, 2), ids[:, 1:].to(device), reduction="sum")

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


# --------------------------------------------------------------------------------------------------
# Iterative greedy removal (SLEB for blocks, BlockPruner for sub-blocks)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GreedyResult:
    """The removal order of an iterative greedy search and the mean calibration NLL after each step.

    Greedy searches are nested: the first k entries of ``order`` are the search's choice at k.
    """

    granularity: str
    order: list[int]
    nll: list[float]  # mean NLL after step 1 … len(order)
    base_nll: float
    evaluated: list[int] = field(default_factory=list)  # candidates evaluated at each step
    abandoned: list[int] = field(default_factory=list)  # of those, how many the bound cut short

    def chosen(self, k: int) -> list[int]:
        if k > len(self.order):
            raise ValueError(f"the search ran {len(self.order)} steps; ask for k <= {len(self.order)} or run it longer")
        return sorted(self.order[:k])


@contextlib.contextmanager
def without_layers(model: nn.Module, layers: Sequence[int]) -> Iterator[nn.Module]:
    """Temporarily remove blocks ``layers`` from ``model`` (no copy); the naive search's model."""
    inner = model.model
    original = inner.layers
    keep = [i for i in range(len(original)) if i not in set(layers)]
    inner.layers = nn.ModuleList(original[i] for i in keep)
    try:
        yield model
    finally:
        inner.layers = original


@torch.no_grad()
def greedy_removal(
    model: nn.Module,
    input_ids: torch.Tensor,
    steps: int,
    granularity: Granularity = "layer",
    batch_size: int = 4,
    cached: bool = True,
    shortlist: int | None = None,
    start: Sequence[int] = (),
    first: np.ndarray | None = None,
    bounded: bool = True,
    bound_vocab: int = BOUND_VOCAB,
    progress: bool = False,
) -> GreedyResult:
    """Iteratively remove the unit whose removal raises the calibration NLL least, re-scoring after each step.

    SLEB (Song et al. 2024, arXiv:2402.09025) at ``granularity="layer"``; BlockPruner (Zhong et al.
    2024, arXiv:2406.10594) at ``"sublayer"``, whose candidates are attention and MLP sub-blocks.

    Args:
        steps: how many units to remove in all (including ``start``).
        cached: evaluate each candidate from the cached stream entering its block (see module doc).
            ``False`` is the naive search: every candidate is a full forward pass of the model with
            the candidate removed (blocks are dropped from the model without copying; sub-blocks are
            bypassed by the same trunk code from the embeddings). Both choose the same units.
        bounded: (cached search only) evaluate the candidates most promising first and abandon one as
            soon as its total NLL is sure to exceed the best complete total of this step
            (``Trunk.total_nll``): a lower bound from a few thousand LM-head rows, batch by batch,
            and the full 49k-row head only for a candidate that might still win. The bounds never
            exceed the NLL, so the choice is exactly the same; catastrophic candidates (typically
            the first and last blocks, which are also the dearest to evaluate from the cache) stop
            after a batch or two, and most others never pay the full LM head.
        bound_vocab: tokens the lower bound scores besides the targets (``Trunk``; 0: only the
            exact partial sums are compared with the bound).
        shortlist: after the first step, evaluate only the ``shortlist`` candidates that scored best at
            the previous step (an approximation; ``None`` is the exact search). With ``bounded``, a
            step whose candidates outnumber the shortlist completes its best ``shortlist + 1``
            exactly, and candidates the bound abandoned rank after every completed one, so the
            shortlists (and choices) are those of the unbounded search.
        start: units already removed (a previous, shorter run of the same search) to continue from.
        first: the mean calibration NLL with each unit removed alone, (U,), when already known from
            ``ablation_scan`` on the same blocks: the first step reads it instead of re-measuring.
    """
    L = len(decoder_layers(model))
    U = num_units(L, granularity)
    if not 1 <= steps <= U - 1:
        raise ValueError(f"steps = {steps} is outside 1 … {U - 1} for {U} {granularity} units")
    if shortlist is not None and shortlist < 1:
        raise ValueError(f"shortlist must be positive or None, got {shortlist}")
    trunk = Trunk(model, input_ids, batch_size, bound_vocab=bound_vocab)
    count = float(trunk.n_predictions().sum())
    bounded = bounded and cached
    removed: list[int] = list(start)
    mask = removal_mask(removed, L, granularity)
    if cached:
        trunk.refresh(mask, progress=progress)
    if removed:
        base = math.nan  # known to the run that chose ``start``
    elif cached:
        base = float(sum(trunk.nll(trunk.states[L][b], b).sum() for b in range(len(trunk.batches)))) / count
    else:
        base = float(_naive_nll(trunk, model, [], granularity).sum()) / count
    losses: list[float] = []
    evaluated: list[int] = []
    abandoned: list[int] = []
    previous: dict[int, float] = {}
    for _ in tqdm(range(len(removed), steps), desc=f"greedy ({granularity})", disable=not progress, leave=False):
        candidates = [u for u in range(U) if u not in removed]
        if shortlist is not None and previous:
            # abandoned candidates (known to be worse than every complete one) before unevaluated ones
            candidates = sorted(candidates, key=lambda u: (u not in previous, previous.get(u, math.inf)))[:shortlist]
        scores: dict[int, float] = {}
        if first is not None and not removed:
            scores = {u: float(first[u]) for u in candidates}
            candidates = []
        if bounded:  # most promising first: the previous step's scores, else Block Influence of the current model
            hint = previous or dict(enumerate(trunk.block_influence() if granularity == "layer" else np.zeros(U)))
            candidates = sorted(candidates, key=lambda u: (hint.get(u, math.inf), u))
        # The bound is the keep-th best complete total: the next step's shortlist needs the exact
        # ranks of the best shortlist + 1 candidates, unless every candidate makes it anyway.
        keep = 1 if shortlist is None or len(candidates) <= shortlist + 1 else shortlist + 1
        complete: list[float] = []  # totals of the candidates evaluated in full, ascending
        cut = 0
        for u in candidates:
            if cached:
                bound = complete[keep - 1] if len(complete) >= keep else math.inf
                total = trunk.candidate_nll(u, granularity, bound=bound if bounded else math.inf)
            else:
                total = _naive_nll(trunk, model, removed + [u], granularity)
            if total is None:  # abandoned: its loss exceeds the best complete one(s)
                cut += 1
                continue
            value = float(total.sum())
            scores[u] = value / count
            bisect.insort(complete, value)
        best = min(scores, key=lambda u: (scores[u], u))
        removed.append(best)
        losses.append(scores[best])
        evaluated.append(len(candidates))  # 0 where the first step was read from the ablation scan
        abandoned.append(cut)
        previous = scores | {u: math.inf for u in candidates if u not in scores}
        mask = removal_mask(removed, L, granularity)
        if cached:
            trunk.refresh(mask, from_layer=best if granularity == "layer" else best // 2)
    return GreedyResult(granularity, removed, losses, base, evaluated, abandoned)


@dataclass(frozen=True)
class SwapResult:
    """A local search's final removal set, its mean calibration NLL, and the swaps it made."""

    removed: list[int]
    nll: float
    start_nll: float
    swaps: list[tuple[int, int]]  # (put back, removed instead), in order
    start: list[int] = field(default_factory=list)  # the starting set the search improved (the best of those given)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"removed": np.array(self.removed), "nll": np.array(self.nll), "start_nll": np.array(self.start_nll),
                "swaps": np.array(self.swaps, dtype=np.int64).reshape(-1, 2), "start": np.array(self.start)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> SwapResult:
        return cls([int(u) for u in arrays["removed"]], float(arrays["nll"]), float(arrays["start_nll"]),
                   [(int(a), int(b)) for a, b in arrays["swaps"]], [int(u) for u in arrays["start"]])


@torch.no_grad()
def swap_search(
    model: nn.Module,
    input_ids: torch.Tensor,
    start: Sequence[int],
    batch_size: int = 4,
    max_rounds: int = 8,
    progress: bool = False,
    alternatives: Sequence[Sequence[int]] = (),
) -> SwapResult:
    """Improve a set of removed blocks by swaps: put one back, remove a neighbour of the set instead.

    ``alternatives``: other starting sets of the same size (e.g. other strategies' choices); the
    search starts from whichever of ``start`` and these has the lowest calibration NLL (multi-start).

    A greedy search cannot undo an early choice; this steepest-descent local search can. Each round
    evaluates every swap of a removed block r for a kept block adjacent to the removed set (the
    calibration NLL of each configuration computed from the unpruned model's cached streams, from
    the first removed block on) and applies the best one if it lowers the calibration NLL; it stops
    when no swap helps or after ``max_rounds``. Started from SLEB's choice this is "SLEB + swaps", a
    refinement in the spirit of the local search of Kim et al. 2024 ("Shortened LLaMA") and
    SLEB's own observation that greedy block choices interact (Song et al. 2024, arXiv:2402.09025).
    """
    L = len(decoder_layers(model))
    removed = sorted(int(u) for u in start)
    if not 1 <= len(removed) <= L - 1:
        raise ValueError(f"start must name 1 … {L - 1} blocks, got {removed}")
    trunk = Trunk(model, input_ids, batch_size)
    trunk.refresh(np.zeros((L, 2), dtype=bool))
    loss = _calibration_loss(trunk, "layer")
    current = loss(removed)
    for other in alternatives:
        other = sorted(int(u) for u in other)
        if len(other) != len(removed):
            raise ValueError(f"every starting set must name {len(removed)} blocks, got {other}")
        if other != removed:
            value = loss(other, current)
            if value < current:
                removed, current = other, value

    def neighbours(removed: list[int]) -> Iterator[tuple[int, int]]:
        kept = sorted({n for r in removed for n in (r - 1, r + 1) if 0 <= n < L and n not in removed})
        return ((r, c) for r in removed for c in kept)

    final, value, swaps = _descend(loss, removed, current, neighbours, max_rounds, progress)
    return SwapResult(final, value, current, swaps, removed)


@torch.no_grad()
def part_swap_search(
    model: nn.Module,
    input_ids: torch.Tensor,
    start: Sequence[int],
    cost: np.ndarray,
    width: int = 4,
    parts: Sequence[int] = (ATTN,),
    batch_size: int = 4,
    max_rounds: int = 8,
    progress: bool = False,
) -> SwapResult:
    """Improve a set of removed sub-blocks by same-kind swaps: put back the attention (or MLP) of one block, remove another's.

    ``start`` and the result are sub-block ids (``2ℓ`` attention, ``2ℓ+1`` MLP of block ℓ), typically
    the sub-blocks of the best whole-block choice. A swap never changes how many attention and MLP
    sub-blocks are removed, so the pruned model keeps the same parameter count and compute. The
    sub-blocks tried in place of a removed one are the ``width`` kept ones of the same kind with the
    lowest ``cost`` (2L,), e.g. the one-sub-block-out ΔNLL; ``parts`` are the kinds swapped (``ATTN``
    by default: attention sub-blocks are far more redundant than MLPs, He et al. 2024, "What Matters
    in Transformers? Not All Attention is Needed", arXiv:2406.15786, and a whole-block choice removes
    an attention that matters along with a cheap MLP). Steepest descent on the calibration NLL as in
    ``swap_search``, from the unpruned model's cached streams, with the same exact bound.
    """
    L = len(decoder_layers(model))
    removed = sorted({int(u) for u in start})
    if not removed or not all(0 <= u < 2 * L for u in removed):
        raise ValueError(f"start must name sub-blocks in 0 … {2 * L - 1}, got {removed}")
    if np.shape(cost) != (2 * L,):
        raise ValueError(f"cost must give one number per sub-block, shape ({2 * L},), got {np.shape(cost)}")
    if width < 1 or not parts or not set(parts) <= {ATTN, MLP}:
        raise ValueError(f"need width >= 1 and parts among ATTN = {ATTN}, MLP = {MLP}; got width {width}, parts {parts}")
    trunk = Trunk(model, input_ids, batch_size)
    trunk.refresh(np.zeros((L, 2), dtype=bool))
    loss = _calibration_loss(trunk, "sublayer")

    def same_kind(removed: list[int]) -> Iterator[tuple[int, int]]:
        for part in parts:
            kept = [u for u in range(part, 2 * L, 2) if u not in removed]
            for c in sorted(kept, key=lambda u: (cost[u], u))[:width]:
                # the trials that remove c share the stream up to the block whose sub-block they put back:
                # cache it once (the trials then run from that block on, ``Trunk.mask_nll``)
                mask = removal_mask([*removed, c], L, "sublayer")
                if (start := trunk.first_difference(mask)) < L:
                    trunk.refresh(mask, from_layer=start)
                yield from ((r, c) for r in removed if r % 2 == part)

    current = loss(removed)
    final, value, swaps = _descend(loss, removed, current, same_kind, max_rounds, progress)
    return SwapResult(final, value, current, swaps, removed)


def _calibration_loss(trunk: Trunk, granularity: Granularity) -> Callable[..., float]:
    """``loss(units, bound=inf)``: mean calibration NLL with ``units`` removed (``inf`` once sure to exceed ``bound``)."""
    count = float(trunk.n_predictions().sum())

    def loss(units: Sequence[int], bound: float = math.inf) -> float:
        total = trunk.mask_nll(removal_mask(units, trunk.num_layers, granularity), bound=bound * count)
        return math.inf if total is None else float(total.sum()) / count

    return loss


def _descend(
    loss: Callable[..., float],
    removed: list[int],
    current: float,
    moves: Callable[[list[int]], Iterable[tuple[int, int]]],
    max_rounds: int,
    progress: bool,
) -> tuple[list[int], float, list[tuple[int, int]]]:
    """Steepest descent over swaps ``(put back, remove instead)``: each round tries every move and applies the best if it helps."""
    swaps: list[tuple[int, int]] = []
    for _ in tqdm(range(max_rounds), desc="swap search", disable=not progress, leave=False):
        trials: dict[tuple[int, int], float] = {}
        best = current
        for r, c in moves(removed):  # a trial that cannot beat the best so far is abandoned early (exact)
            trials[(r, c)] = loss(sorted(set(removed) - {r} | {c}), best)
            best = min(best, trials[(r, c)])
        if not trials:
            break
        (r, c), value = min(trials.items(), key=lambda item: (item[1], item[0]))
        if value >= current:
            break
        removed, current = sorted(set(removed) - {r} | {c}), value
        swaps.append((r, c))
    return removed, current, swaps


@torch.no_grad()
def _naive_nll(trunk: Trunk, model: nn.Module, units: list[int], granularity: Granularity) -> torch.Tensor:
    """Per-sample NLL sums of the model with ``units`` removed, by a full forward pass from the embeddings."""
    if granularity == "layer":
        out = []
        with without_layers(model, units) as pruned:
            for batch in trunk.batches:
                logits = pruned(input_ids=batch.ids, use_cache=False).logits[:, :-1].float()  # (B, T-1, V)
                nll = F.cross_entropy(logits.transpose(1, 2), batch.ids[:, 1:], reduction="none")  # (B, T-1)
                out.append(nll.double().sum(1).cpu())
        return torch.cat(out)
    mask = removal_mask(units, trunk.num_layers, granularity)
    return torch.cat([trunk.nll(trunk.run(trunk.embed(b), b, 0, mask), b) for b in range(len(trunk.batches))])


# --------------------------------------------------------------------------------------------------
# The selection context: similarity, lazily computed scores, and (when needed) the model and data
# --------------------------------------------------------------------------------------------------

Store = Callable[[str, dict[str, Any], Callable[[], dict[str, np.ndarray]]], dict[str, np.ndarray]]


def _memory_store() -> Store:
    memo: dict[str, dict[str, np.ndarray]] = {}

    def store(kind: str, params: dict[str, Any], compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        key = f"{kind}:{sorted(params.items())}"
        if key not in memo:
            memo[key] = compute()
        return memo[key]

    return store


class LayerScores:
    """What a selection strategy may read: the similarity statistics, lazily computed scores, and the
    model with its calibration blocks for the strategies that measure the model itself.

    Pass it to ``frankenllama.select_layers`` in place of a bare ``LayerSimilarity``. Scores are
    computed on first use and kept; ``store`` (``frankenllama.stages`` passes one) keeps them on disk
    under a key derived from the stage config, so a later notebook reads them instead.

    Args:
        similarity: residual-stream statistics; computed from ``model`` and ``calib`` when omitted.
        model: the model whose blocks are scored (read-only: nothing is modified).
        calib: ``(N, T)`` calibration token blocks (the ``calib`` split).
        batch_size: blocks per forward pass.
        shortlist: candidate shortlist of the greedy searches (``None``: exact; see ``greedy_removal``).
        store: ``store(kind, params, compute) -> arrays`` cache; in-memory by default.
        progress: show progress bars of the long computations.
        greedy_steps: run the greedy searches to at least this many steps whatever k is asked, so
            that one (cached) run serves every k (they are nested).
        sublayer_blocks: measure sub-blocks (2L units, twice the work) on only the first this many
            calibration blocks (``None``: all).
        jackknife: compute Taylor's leave-one-out replicates along with its score (``TaylorScores.loo``).
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
    ):
        if similarity is None and scans:
            similarity = next(iter(scans)).similarity()
        if similarity is None and (model is None or calib is None):
            raise ValueError("LayerScores needs a LayerSimilarity, or a model and calibration blocks to compute one")
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
        self.progress = progress
        self._greedy: dict[str, GreedyResult] = {}
        self._scans = {scan.granularity: scan for scan in scans}
        self._taylor = taylor
        self.greedy_steps = greedy_steps
        self.sublayer_blocks = sublayer_blocks
        self.jackknife = jackknife

    @property
    def similarity(self) -> LayerSimilarity:
        if self._similarity is None:
            self._similarity = layer_similarity(self.model, self.calib, batch_size=self.batch_size)
        return self._similarity

    def calib_for(self, granularity: Granularity) -> torch.Tensor:
        """The calibration blocks measured at this granularity."""
        assert self.calib is not None
        return self.calib if granularity == "layer" or self.sublayer_blocks is None else self.calib[: self.sublayer_blocks]

    @property
    def num_layers(self) -> int:
        return self._similarity.num_layers if self._similarity is not None else len(decoder_layers(self.model))

    @property
    def has_model(self) -> bool:
        return self.model is not None

    def require_model(self, what: str) -> None:
        if self.model is None:
            raise ValueError(
                f"{what} measures the model itself: build LayerScores(similarity, model=model, calib=calib_blocks) "
                "and pass that to select_layers instead of a bare LayerSimilarity"
            )

    def scan(self, granularity: Granularity = "layer") -> AblationScan:
        """The one-unit-out ablation scan (KL only at layer granularity), computed once."""
        if granularity in self._scans:
            return self._scans[granularity]
        self.require_model("the ablation scan")
        if self.num_layers < 2:
            raise ValueError(f"ablation needs a model with at least 2 layers (this one has {self.num_layers})")
        params = {"batch_size": self.batch_size} | ({"blocks": self.sublayer_blocks} if granularity == "sublayer" else {})
        arrays = self.store(f"ablation-{granularity}", params, lambda: ablation_scan(
            self.model, self.calib_for(granularity), granularity, self.batch_size, kl=granularity == "layer", progress=self.progress).to_arrays())
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
        """The iterative greedy search run to at least ``k`` steps (reusing and extending shorter runs)."""
        self.require_model("the iterative greedy search")
        units = num_units(self.num_layers, granularity)
        k = min(max(k, self.greedy_steps or 0), units - 1)
        known = self._greedy.get(granularity)
        if known is not None and len(known.order) >= k:
            return known

        def compute() -> dict[str, np.ndarray]:
            prefix = [] if known is None else known.order
            first = None
            if not prefix:  # the first greedy step is the one-unit-out ablation: read it from the scan
                scan = self.scan(granularity)
                first = scan.base_mean_nll() + scan.delta_nll()
            run = greedy_removal(self.model, self.calib_for(granularity), k, granularity, self.batch_size, shortlist=self.shortlist,
                                 start=prefix, first=first if not prefix else None, progress=self.progress)
            nll = ([] if known is None else known.nll) + run.nll
            base = run.base_nll if known is None else known.base_nll
            return {"order": np.array(run.order), "nll": np.array(nll), "base_nll": np.array(base),
                    "evaluated": np.array(([] if known is None else known.evaluated) + run.evaluated)}

        params = {"k": k, "shortlist": self.shortlist, "batch_size": self.batch_size}
        params |= {"blocks": self.sublayer_blocks} if granularity == "sublayer" else {}
        arrays = self.store(f"greedy-{granularity}", params, compute)
        result = GreedyResult(granularity, [int(u) for u in arrays["order"]], [float(v) for v in arrays["nll"]],
                              float(arrays["base_nll"]), [int(v) for v in arrays["evaluated"]])
        self._greedy[granularity] = result
        return result

    def swap(self, k: int, starts: Sequence[Sequence[int]] = ()) -> SwapResult:
        """``swap_search`` at k from the best (on calibration NLL) of SLEB's choice and ``starts`` (cached)."""
        self.require_model("the swap search")
        start = self.greedy(k, "layer").chosen(k)
        others = sorted({tuple(sorted(int(u) for u in s)) for s in starts} - {tuple(start)})

        def compute() -> dict[str, np.ndarray]:
            return swap_search(self.model, self.calib, start, self.batch_size, progress=self.progress,
                               alternatives=others).to_arrays()

        return SwapResult.from_arrays(self.store("swap", {"k": k, "start": start, "others": others, "batch_size": self.batch_size}, compute))

    def part_swap(self, k: int, starts: Sequence[Sequence[int]] = (), width: int = 4, rounds: int = 2) -> SwapResult:
        """``part_swap_search`` from the sub-blocks of ``swap(k, starts)``'s k blocks, cost = one-sub-block-out ΔNLL (cached).

        At most ``rounds`` swaps: each round costs ``width`` × (removed attention sub-blocks)
        calibration passes, and on a CPU two rounds are what the workbook's time budget allows;
        raise it to run the local search until no swap helps.
        """
        layers = self.swap(k, starts).removed
        start = sorted(2 * l + part for l in layers for part in (ATTN, MLP))
        cost = self.scan("sublayer").delta_nll()

        def compute() -> dict[str, np.ndarray]:
            return part_swap_search(self.model, self.calib, start, cost, width, batch_size=self.batch_size,
                                    max_rounds=rounds, progress=self.progress).to_arrays()

        params = {"k": k, "start": start, "width": width, "rounds": rounds, "cost_blocks": self.sublayer_blocks,
                  "batch_size": self.batch_size}
        return SwapResult.from_arrays(self.store("part-swap", params, compute))

    def score(self, name: str) -> np.ndarray:
        """Importance of every unit under score ``name`` (a key of ``SCORES``); higher means keep."""
        if name not in SCORES:
            raise UnknownScoreError(f"unknown score {name!r}; choose one of {sorted(SCORES)}")
        return SCORES[name].compute(self)


@dataclass(frozen=True)
class Score:
    """A registered importance score: how to compute it from a ``LayerScores`` and where it comes from."""

    compute: Callable[[LayerScores], np.ndarray]
    granularity: str
    needs_model: bool
    cite: str


SCORES: dict[str, Score] = {
    "block-influence": Score(lambda c: c.similarity.block_influence, "layer", False,
                             "ShortGPT, Men et al. 2024, arXiv:2403.03853"),
    "angular": Score(lambda c: c.similarity.angular_distance("last")[:, 0], "layer", False,
                     "Gromov et al. 2024, arXiv:2403.17887 (d(ℓ,1), last token)"),
    "angular-all": Score(lambda c: c.similarity.angular_distance("all")[:, 0], "layer", False,
                         "Gromov et al. 2024, arXiv:2403.17887 (d(ℓ,1), all tokens)"),
    "ablation-nll": Score(lambda c: c.scan().delta_nll(), "layer", True, "one-layer-out ΔNLL (SLEB step 1, arXiv:2402.09025)"),
    "ablation-ppl": Score(lambda c: c.scan().delta_ppl(), "layer", True, "one-layer-out ΔPPL"),
    "ablation-kl": Score(lambda c: c.scan().mean_kl(), "layer", True, "one-layer-out KL to the full model"),
    "taylor": Score(lambda c: c.taylor().score, "layer", True, "Taylor, Kim et al. 2024, arXiv:2402.02834"),
    "sublayer-nll": Score(lambda c: c.scan("sublayer").delta_nll(), "sublayer", True,
                          "one-sub-block-out ΔNLL (BlockPruner, Zhong et al. 2024, arXiv:2406.10594)"),
}
