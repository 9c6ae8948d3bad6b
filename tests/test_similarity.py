"""Invariants of the one-pass layer-similarity statistics, on tiny in-process llamas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_llama

from frankenllama import layer_similarity


def make_identity(model, layer: int) -> None:
    """Zero the two output projections of a block: it then adds nothing to the residual stream."""
    block = model.model.layers[layer]
    torch.nn.init.zeros_(block.self_attn.o_proj.weight)
    torch.nn.init.zeros_(block.mlp.down_proj.weight)


def reference_states(model, ids: torch.Tensor) -> list[torch.Tensor]:
    """x_0 … x_L by running the blocks by hand (x_L before the final norm)."""
    inner = model.model
    hidden = inner.embed_tokens(ids)
    position_ids = torch.arange(ids.shape[1]).unsqueeze(0)
    pe = inner.rotary_emb(hidden, position_ids)
    states = [hidden]
    for block in inner.layers:
        hidden = block(hidden, attention_mask=None, position_embeddings=pe, position_ids=position_ids)
        states.append(hidden)
    return states


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(3, 128, (6, 16), generator=torch.Generator().manual_seed(1))


def test_ranges_and_diagonals(tiny_model, ids):
    sim = layer_similarity(tiny_model, ids, batch_size=4)
    L = tiny_model.config.num_hidden_layers
    assert sim.cosine.shape == (L + 1, L + 1) and sim.num_layers == L
    for mat in (sim.angular_all, sim.angular_last):
        assert np.all((mat >= 0) & (mat <= 1))
        np.testing.assert_array_equal(np.diagonal(mat), 0.0)  # d(x, x) = 0
        np.testing.assert_allclose(mat, mat.T, atol=1e-6)
    assert np.all(np.abs(sim.cosine) <= 1 + 1e-6)
    D = sim.angular_distance("last")
    assert D.shape == (L, L)
    assert np.isnan(D[L - 1, 1]) and not np.isnan(D[0, L - 1])  # d(ℓ, n) exists iff ℓ + n ≤ L
    assert sim.n_tokens == ids.numel() and sim.n_sequences == ids.shape[0]


def test_identity_block_has_zero_influence(ids):
    model = tiny_llama(num_layers=4)
    make_identity(model, 2)
    sim = layer_similarity(model, ids)
    assert sim.block_influence[2] < 1e-6
    assert sim.angular_distance("last")[2, 0] < 1e-3
    assert sim.angular_distance("all")[2, 0] < 1e-3
    assert sim.block_influence[[0, 1, 3]].min() > 1e-3


def test_matches_brute_force_and_uses_pre_norm_output(tiny_model, ids):
    sim = layer_similarity(tiny_model, ids, batch_size=4)
    with torch.no_grad():
        states = reference_states(tiny_model, ids)
    unit = [F.normalize(s, dim=-1) for s in states]
    L = len(states) - 1
    cos = torch.tensor([[float((unit[i] * unit[j]).sum(-1).mean()) for j in range(L + 1)] for i in range(L + 1)])
    np.testing.assert_allclose(sim.cosine, cos.numpy(), atol=1e-5)
    last = float(torch.arccos((unit[0][:, -1] * unit[L][:, -1]).sum(-1).clamp(-1, 1)).mean() / math.pi)
    assert sim.angular_last[0, L] == pytest.approx(last, abs=1e-5)
    # transformers' last hidden state is after the final norm: the statistics must not be built on it.
    with torch.no_grad():
        normed = tiny_model(ids, output_hidden_states=True).hidden_states[-1]
    assert not torch.allclose(normed, states[-1], atol=1e-3)


def test_batch_size_does_not_change_results(tiny_model, ids):
    a = layer_similarity(tiny_model, ids, batch_size=1)
    b = layer_similarity(tiny_model, ids, batch_size=6)
    np.testing.assert_allclose(a.cosine, b.cosine, atol=1e-6)
    np.testing.assert_allclose(a.angular_last, b.angular_last, atol=1e-6)


def test_padding_is_ignored(tiny_model):
    gen = torch.Generator().manual_seed(2)
    short, long = torch.randint(3, 128, (1, 9), generator=gen), torch.randint(3, 128, (1, 16), generator=gen)
    padded = torch.cat([torch.cat([short, torch.full((1, 7), 2)], dim=1), long])  # right padding
    mask = torch.ones_like(padded)
    mask[0, 9:] = 0
    both = layer_similarity(tiny_model, padded, attention_mask=mask, batch_size=2)
    a, b = layer_similarity(tiny_model, short), layer_similarity(tiny_model, long)
    assert both.n_tokens == 25
    np.testing.assert_allclose(both.cosine, (9 * a.cosine + 16 * b.cosine) / 25, atol=1e-5)
    np.testing.assert_allclose(both.angular_all, (9 * a.angular_all + 16 * b.angular_all) / 25, atol=1e-5)
    np.testing.assert_allclose(both.angular_last, (a.angular_last + b.angular_last) / 2, atol=1e-5)


def test_arrays_round_trip(tiny_model, ids):
    from frankenllama.similarity import LayerSimilarity

    sim = layer_similarity(tiny_model, ids)
    again = LayerSimilarity.from_arrays(sim.to_arrays())
    np.testing.assert_array_equal(again.block_influence, sim.block_influence)
    assert again.n_tokens == sim.n_tokens


def test_bad_input(tiny_model):
    with pytest.raises(ValueError, match="shape"):
        layer_similarity(tiny_model, torch.zeros(0, 4, dtype=torch.long))
