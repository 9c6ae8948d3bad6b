"""Layer similarity of the residual stream, from one forward pass.

Notation: ``x_0`` is the residual stream entering block 0 (the token embeddings), ``x_ℓ`` the stream
entering block ℓ, and ``x_L`` the output of the last block *before* the final norm. (The last entry
of transformers' ``hidden_states`` is taken after the final norm, so it is not used here: forward
hooks on the blocks capture the raw stream.)

Scores computed from the same pass:

* cosine matrix ``C[i, j] = mean_t cos(x_i, x_j)`` over all non-padding tokens, for 0 ≤ i, j ≤ L;
* Block Influence ``BI_ℓ = 1 − mean_t cos(x_ℓ, x_ℓ+1)`` (ShortGPT, Men et al. 2024, arXiv:2403.03853);
* angular distance ``d(ℓ, n) = arccos(cos(x_ℓ, x_ℓ+n)) / π`` between the input of block ℓ and the
  output of block ℓ+n−1 (Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper
  Layers", arXiv:2403.17887), both on the last token of each sequence (as in the paper) and averaged
  over all tokens (the mean of the per-token distances, not the distance of the mean cosine).

Statistics are accumulated batch by batch as running sums of ``(L+1) × (L+1)`` matrices, so memory
is bounded by one batch's residual states whatever the number of calibration tokens. With
``stream_store="cpu"`` or ``"disk"`` (``frankenllama.streams``) those states leave the accelerator as
they are captured and come back a token slice of every state at a time, so the accelerator holds
about one stream and one block; the model itself may be spread or offloaded by accelerate's
``device_map`` (the pass calls the dispatched modules, whose hooks move inputs and weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from frankenllama.models import decoder_layers, model_device
from frankenllama.streams import StreamStore, unit_chunks

TokenScope = Literal["last", "all"]


@dataclass(frozen=True)
class LayerSimilarity:
    """Residual-stream similarity statistics of an L-block model (arrays indexed by residual state)."""

    cosine: np.ndarray  # (L+1, L+1) mean cosine over all tokens
    angular_all: np.ndarray  # (L+1, L+1) mean over all tokens of arccos(cos)/π
    angular_last: np.ndarray  # (L+1, L+1) mean over sequences of arccos(cos)/π at the last token
    n_tokens: int
    n_sequences: int

    @property
    def num_layers(self) -> int:
        return self.cosine.shape[0] - 1

    @property
    def block_influence(self) -> np.ndarray:
        """``BI_ℓ = 1 − mean cos(x_ℓ, x_ℓ+1)`` for ℓ = 0 … L−1, shape (L,)."""
        return 1.0 - np.diagonal(self.cosine, offset=1).copy()

    def angular_distance(self, tokens: TokenScope = "last") -> np.ndarray:
        """``D[ℓ, n−1] = d(ℓ, n)`` for start ℓ = 0 … L−1 and block size n = 1 … L; NaN where ℓ+n > L."""
        pair = {"last": self.angular_last, "all": self.angular_all}[tokens]
        L = self.num_layers
        out = np.full((L, L), np.nan)
        for n in range(1, L + 1):
            starts = np.arange(0, L - n + 1)
            out[starts, n - 1] = pair[starts, starts + n]
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "cosine": self.cosine,
            "angular_all": self.angular_all,
            "angular_last": self.angular_last,
            "counts": np.array([self.n_tokens, self.n_sequences]),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> LayerSimilarity:
        n_tokens, n_sequences = (int(v) for v in arrays["counts"])
        return cls(arrays["cosine"], arrays["angular_all"], arrays["angular_last"], n_tokens, n_sequences)


class ResidualCapture:
    """Forward hooks that record the residual stream entering every block and leaving the last one.

    ``store``: put state i of the pass under key ``(i, 0)`` there (``count`` says how many) instead
    of keeping the list that ``pop`` returns.
    """

    def __init__(self, model: nn.Module, store: StreamStore | None = None):
        self.layers = decoder_layers(model)
        self.states: list[torch.Tensor] = []
        self.store = store
        self.count = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _keep(self, hidden: torch.Tensor) -> None:
        if self.store is None:
            self.states.append(hidden)
        else:
            self.store.put((self.count, 0), hidden)
        self.count += 1

    def __enter__(self) -> ResidualCapture:
        def grab_input(module, args, kwargs):
            self._keep(args[0] if args else kwargs["hidden_states"])

        def grab_output(module, args, output):
            self._keep(output[0] if isinstance(output, tuple) else output)

        self._handles.append(self.layers[0].register_forward_pre_hook(grab_input, with_kwargs=True))
        for layer in self.layers:
            self._handles.append(layer.register_forward_hook(grab_output))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def pop(self) -> list[torch.Tensor]:
        states, self.states, self.count = self.states, [], 0
        return states


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-padding token of each row of a (B, T) mask (left or right padding)."""
    return mask.shape[1] - 1 - mask.flip(1).int().argmax(dim=1)


@torch.inference_mode()
def layer_similarity(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    batch_size: int = 8,
    progress: bool = False,
    stream_store: str = "device",
    stream_dir: str | None = None,
) -> LayerSimilarity:
    """Residual-stream similarity statistics of ``model`` on ``(N, T)`` token blocks (see module doc).

    Runs the decoder trunk only (no LM head) once per batch; padding positions (``attention_mask`` 0)
    are excluded from the token averages and the last token of each row is its last real token.
    ``stream_store``/``stream_dir``: where the batch's residual states wait (``frankenllama.streams``);
    the result does not depend on it beyond float rounding.
    """
    if input_ids.dim() != 2 or input_ids.shape[0] == 0:
        raise ValueError(f"expected token ids of shape (N >= 1, T), got {tuple(input_ids.shape)}")
    L = len(decoder_layers(model))
    device = model_device(model)
    sums = torch.zeros(3, L + 1, L + 1, dtype=torch.float64)  # cosine, angular (all tokens), angular (last token)
    n_tokens = n_seqs = 0
    trunk = model.model
    store = StreamStore(stream_store, stream_dir)
    try:
        with ResidualCapture(model, store) as capture:
            for start in tqdm(range(0, len(input_ids), batch_size), desc="similarity", disable=not progress, leave=False):
                ids = input_ids[start : start + batch_size].to(device)  # (B, T)
                mask = torch.ones_like(ids) if attention_mask is None else attention_mask[start : start + batch_size].to(device)
                trunk(input_ids=ids, attention_mask=mask, use_cache=False)
                assert capture.count == L + 1, f"captured {capture.count} residual states, expected {L + 1}"
                n_tokens += _batch_sums(store, L + 1, mask, sums, whole=stream_store == "device")
                n_seqs += ids.shape[0]
                capture.pop()
    finally:
        store.close()
    if n_tokens == 0:
        raise ValueError("attention_mask selects no tokens: nothing to measure")
    # arccos of a float32 cosine of a vector with itself is not exactly 0; the diagonal is 0 by definition.
    ang, ang_last = (sums[1] / n_tokens).numpy(), (sums[2] / n_seqs).numpy()
    np.fill_diagonal(ang, 0.0)
    np.fill_diagonal(ang_last, 0.0)
    cosine = (sums[0] / n_tokens).numpy()
    np.fill_diagonal(cosine, 1.0)
    return LayerSimilarity(cosine, ang, ang_last, n_tokens, n_seqs)


def _batch_sums(store: StreamStore, n_states: int, mask: torch.Tensor, sums: torch.Tensor, whole: bool) -> int:
    """Add one batch's sums of cos, arccos/π (valid tokens) and last-token arccos/π to ``sums`` (3, S, S); returns its valid tokens."""
    device = mask.device
    last_index = last_token_index(mask)  # (B,)
    valid = mask.bool()
    chunks = unit_chunks(lambda i, tokens: store.get((i, 0), tokens), n_states, mask.shape[1], device, whole)
    for tokens, unit in chunks:  # unit: (S, B, t, H)
        picked = unit[:, valid[:, tokens]]  # (S, N_valid, H)
        cos = torch.einsum("inh,jnh->nij", picked, picked).clamp_(-1.0, 1.0)  # (N_valid, S, S)
        sums[0] += cos.sum(0).double().cpu()
        sums[1] += (torch.arccos(cos) / math.pi).sum(0).double().cpu()
        rows = ((last_index >= tokens.start) & (last_index < tokens.stop)).nonzero()[:, 0]
        if len(rows):
            last = unit[:, rows, last_index[rows] - tokens.start]  # (S, B', H)
            cos_last = torch.einsum("ibh,jbh->bij", last, last).clamp_(-1.0, 1.0)  # (B', S, S)
            sums[2] += (torch.arccos(cos_last) / math.pi).sum(0).double().cpu()
    return int(valid.sum())
