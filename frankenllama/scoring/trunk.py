"""The ``Trunk`` engine: a model's decoder stack run block by block from cached residual streams.

How the ablations and searches avoid recomputing what is known: ``Trunk`` runs the calibration
blocks through the model once and keeps the residual stream entering every block; the ablation of
unit u starts from the stored stream entering u's block and runs only blocks ℓ … L−1 (with u
bypassed), the final norm and the LM head. The iterative searches (``frankenllama.scoring.search``)
do the same at every step and, once a unit is chosen, refresh only the streams after it.

Most candidates of a search are far worse than the best one: ``Trunk.total_nll`` abandons a
candidate as soon as its NLL is sure to exceed a bound, first from a *vocabulary lower bound*
(the LM-head rows of a few thousand tokens, ``BOUND_VOCAB``) and then from the exact partial sums.
The bound never exceeds the NLL, so nothing that could win is cut.

Memory. The model may be spread over devices or offloaded by accelerate (``device_map``,
``dispatch_model``): every block runs on its own execution device (accelerate's hooks load offloaded
weights when the block is called), so an accelerator needs one block's weights at a time. The
cached streams live where ``stream_store`` says (``frankenllama.streams``: on the device they were
computed on, in pinned CPU memory, or on disk) and come back one at a time, so a scan or search
holds one block and its activations on the accelerator, not the model and every stream.

Units, ids and masks: ``frankenllama.units``. Calibration blocks are full-length token blocks (no
padding), as ``frankenllama.data`` makes them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import align_module_device, has_offloaded_params
from torch import nn
from tqdm.auto import tqdm
from transformers.masking_utils import create_causal_mask

from frankenllama.loss import next_token_nll
from frankenllama.models import decoder_layers, execution_device, model_device
from frankenllama.streams import StreamStore, check_place
from frankenllama.units import ATTN, MLP, Granularity, bypass_flags, layer_of, removal_mask

BOUND_VOCAB = 4096  # tokens scored by the searches' NLL lower bound (besides the targets); see ``Trunk.total_nll``
_ROUNDING = 1e-5  # relative margin for float32 rounding when a lower bound is compared with an exact total


HEAD_ROWS = 1024  # positions per LM-head product: (rows, V) float32 logits, 200 MB for SmolLM2's 49,152 tokens


def _sample_groups(h: torch.Tensor) -> list[slice]:
    """Consecutive samples of ``h`` (B, T-1, H) holding at most ``HEAD_ROWS`` positions together (at least one sample).

    One product over several samples instead of one per sample: MKL runs the LM head's
    (rows × H) · (H × V) product faster per row when it has more rows (SmolLM2, four calibration blocks of
    128 tokens on two AVX2 cores: the head and its NLL 1.37x, the one-block-out scan 1.15x,
    ``bench/head_rows.py``). There every NLL came out bit-identical to one product per sample (the bench
    checks); elsewhere the two may differ by float rounding.
    """
    per = max(1, HEAD_ROWS // h.shape[1])  # h.shape[1] = T - 1 >= 1: Trunk refuses blocks shorter than 2
    return [slice(i, min(i + per, len(h))) for i in range(0, len(h), per)]


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

    def __init__(self, model: nn.Module, input_ids: torch.Tensor, batch_size: int = 4, bound_vocab: int = BOUND_VOCAB,
                 stream_store: str = "device", stream_dir: str | None = None):  # fmt: skip
        if input_ids.dim() != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] < 2:
            raise ValueError(f"expected token blocks of shape (N >= 1, T >= 2), got {tuple(input_ids.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if bound_vocab < 0:
            raise ValueError(f"bound_vocab must be non-negative (0: no vocabulary bound), got {bound_vocab}")
        check_place(stream_store)
        self.model = model
        self.bound_vocab = bound_vocab
        self.stream_store, self.stream_dir = stream_store, stream_dir
        self._shortlist: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None
        self.layers = decoder_layers(model)
        self.num_layers = len(self.layers)
        self.device = model_device(model)
        self.devices = [execution_device(layer) for layer in self.layers]  # where each block computes
        self.head_device = execution_device(model.lm_head)
        self.input_ids = input_ids
        self.batches: list[_Batch] = []
        self._placed: dict[tuple[int, torch.device], dict[str, Any]] = {}  # block kwargs per (batch, device)
        self.mask = removal_mask((), self.num_layers, "layer")  # nothing removed yet
        self.states: StreamStore | None = None  # ``states[ℓ][b]``
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
        block = self.layers[layer]
        kwargs = self._kwargs(b, self.devices[layer])
        x = x.to(self.devices[layer])  # a no-op on one device; the sub-block calls below have no hook that moves it
        if attn and mlp:
            return block(x, **kwargs)
        if attn:
            out, _ = block.self_attn(hidden_states=block.input_layernorm(x), **kwargs)
            return x + out
        return x + block.mlp(block.post_attention_layernorm(x))

    def _kwargs(self, b: int, device: torch.device) -> dict[str, Any]:
        """The block arguments of batch ``b`` (masks, rotary embeddings) on ``device``, moved once."""
        if (b, device) not in self._placed:
            batch = self.batches[b]
            move = (lambda t: t) if device == self.device else (lambda t: t.to(device) if isinstance(t, torch.Tensor) else t)
            self._placed[(b, device)] = dict(
                attention_mask=move(batch.causal_mask), position_embeddings=tuple(move(t) for t in batch.position_embeddings),
                position_ids=move(batch.position_ids), cache=None, use_cache=False)  # fmt: skip
        return self._placed[(b, device)]

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
        for group in _sample_groups(h):  # a few samples per product bounds the (rows, V) logits in memory
            logits = self.model.lm_head(h[group])  # (G, T-1, V)
            out[group] = next_token_nll(logits, ids[group], shifted=True).sum(-1).double().cpu()  # float32 sums
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
            head, device = self.model.lm_head, self.head_device
            mass = torch.zeros(head.weight.shape[0], dtype=torch.float64, device=device)  # shape is known on "meta" too
            for b in range(len(self.batches)):
                h = self.model.model.norm(self.states[self.num_layers][b][:, :-1])
                for i in range(len(h)):
                    mass += head(h[i]).float().softmax(-1).sum(0).double().to(device)
            targets = self.input_ids[:, 1:].reshape(-1).to(device)
            top = mass.topk(min(self.bound_vocab, len(mass))).indices
            tokens = torch.unique(torch.cat([targets, top]))
            where = torch.full((len(mass),), -1, dtype=torch.long, device=device)
            where[tokens] = torch.arange(len(tokens), device=device)
            # an offloaded head's weights, loaded by its hook for this copy (a head in memory is left alone: no retying)
            with align_module_device(head) if has_offloaded_params(head) else contextlib.nullcontext():
                bias = None if head.bias is None else head.bias[tokens].clone()
                self._shortlist = (head.weight[tokens].contiguous(), bias, where)
        return self._shortlist

    def _nll_lower_bound(self, h: torch.Tensor, b: int) -> torch.Tensor:
        """A lower bound of ``_head_nll(h, b)`` (B,), from the LM-head rows of a few thousand tokens only.

        For any token set S holding the target y, ``logsumexp_S z ≤ logsumexp_V z``, so
        ``logsumexp_S z − z_y ≤ −log p(y)``: exact arithmetic never overestimates a candidate's NLL.
        """
        weight, bias, where = self._vocab()
        targets = where[self.batches[b].ids[:, 1:].to(where.device)]  # (B, T-1) rows of the targets in the shortlist
        out = torch.empty(len(h), dtype=torch.float64)
        for group in _sample_groups(h):
            z = F.linear(h[group].to(weight.device), weight, bias).float()  # (G, T-1, |S|)
            out[group] = (z.logsumexp(-1) - z.gather(-1, targets[group, :, None])[..., 0]).double().sum(-1).cpu()
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
        (N × T × H in the model's dtype), where ``stream_store`` says.
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
        hidden, lower = StreamStore(self.stream_store, self.stream_dir), []
        try:
            for b in range(n):
                h = self.model.model.norm(final(b)[:, :-1])
                hidden.put(b, h)
                lower.append(float(self._nll_lower_bound(h, b).sum()))
                del h
                if sum(lower) > limit:
                    return None
            return self._exact_after_bound(hidden, lower, limit)
        finally:
            hidden.close()

    def _exact_after_bound(self, hidden: StreamStore, lower: list[float], limit: float) -> torch.Tensor | None:
        """``total_nll``'s second pass: the full LM head batch by batch while exact + lower bounds stay under ``limit``."""
        n = len(self.batches)
        out, rest = [], sum(lower)
        for b in range(n):
            out.append(self._head_nll(hidden.get(b), b))
            rest += float(out[-1].sum()) - lower[b]
            if rest > limit and b < n - 1:
                return None
        return torch.cat(out)

    @torch.no_grad()
    def refresh(self, mask: np.ndarray, from_layer: int = 0, progress: bool = False, batches: list[int] | None = None) -> None:
        """Set the removal mask and recompute the cached streams entering blocks ``from_layer`` … L.

        ``batches``: only these batches (default: all); the others keep what they held.
        """
        self.mask = np.array(mask, dtype=bool)
        if self.states is None:
            from_layer = 0
            self.states = StreamStore(self.stream_store, self.stream_dir)
        chosen = range(len(self.batches)) if batches is None else batches
        for b in tqdm(chosen, desc="residual stream", disable=not progress, leave=False):
            if from_layer == 0:
                self.states[0][b] = x = self.embed(b)
            else:
                x = self.states[from_layer][b]
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
        layer = layer_of(unit, granularity)
        first = bypass_flags(unit, granularity, self.mask)
        return self.total_nll(lambda b: self.run(self.states[layer][b], b, layer, self.mask, first=first), bound)

    @torch.no_grad()
    def block_influence(self) -> np.ndarray:
        """``1 − mean cos(x_ℓ, x_ℓ+1)`` of every block under the current mask, from the cached streams (L,)."""
        assert self.states is not None, "call refresh() first"
        out = np.zeros(self.num_layers)
        for layer in range(self.num_layers):
            cos = [F.cosine_similarity(self.states[layer][b].float().to(self.device),
                                       self.states[layer + 1][b].float().to(self.device), dim=-1).mean()
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

    def release(self, b: int) -> None:
        """Forget batch ``b``'s cached streams (a scan done with it)."""
        if self.states is not None:
            for state in range(self.num_layers + 1):
                self.states.drop((state, b))

    def first_difference(self, mask: np.ndarray) -> int:
        """The first block whose sub-blocks ``mask`` removes differently from the current mask (L if none)."""
        changed = np.flatnonzero((np.asarray(mask, dtype=bool) != self.mask).any(axis=1))
        return int(changed[0]) if len(changed) else self.num_layers

    def n_predictions(self) -> np.ndarray:
        """Predictions per sample, (N,): every position but the first."""
        return np.full(self.n_samples, self.input_ids.shape[1] - 1, dtype=np.int64)

