"""Perplexity protocol on a tiny model, against a hand-written computation."""

from __future__ import annotations

import math

import pytest
import torch

from frankenllama import perplexity


def manual_nll(model, ids):
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits.float(), dim=-1)
    return -sum(float(logp[b, t - 1, ids[b, t]]) for b in range(ids.shape[0]) for t in range(1, ids.shape[1]))


def test_matches_manual_and_batching(tiny_model):
    ids = torch.randint(3, 128, (5, 10), generator=torch.Generator().manual_seed(0))
    expected = math.exp(manual_nll(tiny_model, ids) / (5 * 9))
    assert perplexity(tiny_model, ids, batch_size=2) == pytest.approx(expected, rel=1e-5)
    assert perplexity(tiny_model, ids, batch_size=5) == pytest.approx(expected, rel=1e-5)


def test_mask_excludes_padding(tiny_model):
    ids = torch.randint(3, 128, (2, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    expected = math.exp((manual_nll(tiny_model, ids[:1]) + manual_nll(tiny_model, ids[1:, :6])) / (9 + 5))
    assert perplexity(tiny_model, ids, attention_mask=mask) == pytest.approx(expected, rel=1e-5)


def test_block_longer_than_context(tiny_model):
    with pytest.raises(ValueError, match="exceeds the model's context of 128"):
        perplexity(tiny_model, torch.zeros(1, 129, dtype=torch.long))


def test_token_nll_equals_the_direct_cross_entropy(tiny_model):
    """The shared next_token_nll gives the sum and count of a plain cross-entropy over (B, T-1) targets."""
    from frankenllama.eval.perplexity import token_nll

    ids = torch.randint(3, 128, (3, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = tiny_model(ids).logits[:, :-1].float()  # (B, T-1, V)
    expected = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="sum")
    total, count = token_nll(tiny_model, ids, batch_size=2)
    assert count == 3 * 11
    assert total == pytest.approx(float(expected), rel=1e-6)


def test_package_exports_the_function():
    import frankenllama
    from frankenllama.eval.perplexity import perplexity as ppl

    assert frankenllama.perplexity is ppl
