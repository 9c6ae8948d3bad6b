"""Fidelity to the original: KL and top-1 agreement invariants, repeated n-grams, generations."""

from __future__ import annotations

import pytest
import torch

from frankenllama.eval.fidelity import generations_side_by_side, next_token_fidelity, repeated_ngram_fraction
from frankenllama.surgery import drop_layers
from tiny_lm import char_tokenizer, tiny_llama


@pytest.fixture(scope="module")
def blocks():
    return torch.randint(3, 96, (3, 16), generator=torch.Generator().manual_seed(0))  # (N, T)


def test_model_against_itself_has_zero_kl_and_full_agreement(blocks):
    model = tiny_llama(num_layers=3)
    result = next_token_fidelity(model, model, blocks, batch_size=2)
    assert result.kl == pytest.approx(0.0, abs=1e-6)
    assert result.top1_agreement == 1.0
    assert result.n_tokens == blocks.numel()


def test_pruned_model_drifts(blocks):
    model = tiny_llama(num_layers=3)
    pruned = drop_layers(model, [1])
    result = next_token_fidelity(model, pruned, blocks)
    assert result.kl > 1e-3 and 0.0 <= result.top1_agreement <= 1.0


def test_kl_matches_a_hand_computation(blocks):
    """KL(p || q) = Σ p (log p - log q), averaged over positions, computed here the slow way."""
    ref, other = tiny_llama(seed=0), tiny_llama(seed=1)
    with torch.no_grad():
        p = torch.softmax(ref(blocks).logits, -1).reshape(-1, 96)
        q = torch.softmax(other(blocks).logits, -1).reshape(-1, 96)
    expected = sum(float((pi * (pi.log() - qi.log())).sum()) for pi, qi in zip(p, q)) / len(p)
    assert next_token_fidelity(ref, other, blocks, batch_size=1).kl == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    "tokens, n, expected",
    [([1, 2, 3, 1, 2, 3], 3, 0.25), ([1, 2, 3, 4], 2, 0.0), ([7, 7, 7, 7, 7], 1, 0.8), ([1, 2], 3, 0.0), ("abab", 2, 1 / 3)],
)
def test_repeated_ngram_fraction(tokens, n, expected):
    assert repeated_ngram_fraction(tokens, n) == pytest.approx(expected)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="n must be at least 1"):
        repeated_ngram_fraction([1, 2], 0)
    model = tiny_llama()
    with pytest.raises(ValueError, match="token blocks"):
        next_token_fidelity(model, model, torch.zeros(4, dtype=torch.long))


def test_generations_side_by_side():
    tokenizer = char_tokenizer()
    model = tiny_llama()
    table = generations_side_by_side({"a": model, "b": drop_layers(model, [0])}, tokenizer, ["Hi there", "Why?"], max_new_tokens=6)
    assert list(table["model"]) == ["a", "a", "b", "b"]
    assert (table["tokens"] <= 6).all() and table["repeated_3gram"].between(0, 1).all()
