"""``frankenllama.scoring`` on tiny in-process llamas: every shortcut equals the slow, obvious computation.

Invariants: the cached one-layer-out ablation equals dropping the layer and re-running the model;
the scan's per-sample similarity re-aggregates to the foundation's ``layer_similarity``; KL is that
of the two models' softmaxes; Taylor is Σ|w·g| from a plain backward pass, and its jackknife
replicates are Taylor on the calibration set without one sample; the iterative search with and
without the cache (and from a first step read off the scan, and resumed) picks the same units.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_llama
from frankenllama.loss import next_token_nll
from frankenllama.scoring import (
    SCORES,
    LayerScores,
    SelectionContext,
    Trunk,
    UnknownScoreError,
    ablation_scan,
    greedy_removal,
    removal_mask,
    swap_search,
    taylor_scores,
)
from frankenllama.similarity import layer_similarity
from frankenllama.sublayer import prune_sublayers
from frankenllama.surgery import drop_layers


def blocks(n: int = 5, t: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 128, (n, t), generator=torch.Generator().manual_seed(seed))


def mean_nll(model, ids) -> float:
    """Mean next-token NLL of a plain forward pass (the slow, obvious computation)."""
    with torch.no_grad():
        return float(next_token_nll(model(ids).logits, ids).double().mean())


@pytest.fixture(scope="module")
def model():
    return tiny_llama(6, seed=1)


def test_layer_ablation_equals_dropping_the_layer(model):
    ids = blocks()
    scan = ablation_scan(model, ids, batch_size=2)
    base = mean_nll(model, ids)
    assert scan.base_mean_nll() == pytest.approx(base, abs=1e-5)
    for layer in range(6):
        assert scan.delta_nll()[layer] == pytest.approx(mean_nll(drop_layers(model, [layer]), ids) - base, abs=1e-5)
    assert np.allclose(scan.delta_ppl(), np.exp(base + scan.delta_nll()) - math.exp(base), atol=1e-5)


def test_kl_is_that_of_the_two_softmaxes(model):
    ids = blocks(3)
    scan = ablation_scan(model, ids, batch_size=3)
    with torch.no_grad():
        ref = F.log_softmax(model(ids).logits[:, :-1].float(), -1)
        for layer in (0, 3, 5):
            logp = F.log_softmax(drop_layers(model, [layer])(ids).logits[:, :-1].float(), -1)
            kl = (ref.exp() * (ref - logp)).sum(-1).mean()
            assert scan.mean_kl()[layer] == pytest.approx(float(kl), rel=1e-4, abs=1e-6)
    assert (scan.mean_kl() >= -1e-7).all()


def test_scan_similarity_reaggregates_to_layer_similarity(model):
    ids = blocks(4)
    scan = ablation_scan(model, ids, batch_size=3, kl=False)
    sim = layer_similarity(model, ids)
    again = scan.similarity()
    for name in ("cosine", "angular_all", "angular_last"):
        assert np.allclose(getattr(again, name), getattr(sim, name), atol=1e-5), name
    assert (again.n_tokens, again.n_sequences) == (sim.n_tokens, sim.n_sequences)
    half = scan.subset([0, 1])
    assert np.allclose(half.similarity().cosine, layer_similarity(model, ids[:2]).cosine, atol=1e-5)


def test_sublayer_ablation_equals_the_physically_pruned_model(model):
    ids = blocks(3)
    scan = ablation_scan(model, ids, granularity="sublayer", batch_size=2, kl=False)
    base = mean_nll(model, ids)
    for unit in (0, 5, 11):
        pruned = prune_sublayers(model, [unit])
        assert scan.delta_nll()[unit] == pytest.approx(mean_nll(pruned, ids) - base, abs=1e-5)


def test_taylor_is_sum_of_abs_weight_times_gradient(model):
    ids = blocks(4)
    result = taylor_scores(model, ids, batch_size=3, jackknife=True)
    model.zero_grad()
    logits = model(ids).logits[:, :-1]
    F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)).backward()
    expected = [sum(float((p.detach() * p.grad).abs().sum()) for p in block.parameters()) for block in model.model.layers]
    model.zero_grad(set_to_none=True)
    assert np.allclose(result.score, expected, rtol=1e-4)
    without_first = taylor_scores(model, ids[1:], batch_size=3).score
    assert np.allclose(result.loo[0], without_first, rtol=1e-3)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("granularity, steps", [("layer", 4), ("sublayer", 7)])
def test_greedy_with_and_without_cache_picks_the_same_units(model, granularity, steps):
    ids = blocks(5)
    cached = greedy_removal(model, ids, steps, granularity, batch_size=2, cached=True)
    naive = greedy_removal(model, ids, steps, granularity, batch_size=2, cached=False)
    assert cached.order == naive.order
    assert np.allclose(cached.nll, naive.nll, atol=1e-5)
    assert cached.base_nll == pytest.approx(naive.base_nll, abs=1e-5)
    if granularity == "layer":  # the reported loss is that of the physically pruned model
        assert cached.nll[-1] == pytest.approx(mean_nll(drop_layers(model, cached.order), ids), abs=1e-5)
    scan = ablation_scan(model, ids, granularity, batch_size=2, kl=False)
    seeded = greedy_removal(model, ids, steps, granularity, batch_size=2, first=scan.base_mean_nll() + scan.delta_nll())
    assert seeded.order == cached.order
    resumed = greedy_removal(model, ids, steps, granularity, batch_size=2, start=cached.order[:2])
    assert resumed.order == cached.order
    # the bound (checked after every block at batch size 1) changes nothing but the work done,
    # with or without the vocabulary lower bound (a handful of tokens: loose; all 128: tight)
    exact = greedy_removal(model, ids, steps, granularity, batch_size=1, bounded=False)
    assert not any(exact.abandoned)
    for vocab in (0, 4, 128):
        bounded = greedy_removal(model, ids, steps, granularity, batch_size=1, bounded=True, bound_vocab=vocab)
        assert bounded.order == exact.order == cached.order and bounded.nll == exact.nll
        assert len(bounded.abandoned) == steps
        assert vocab < 128 or sum(bounded.abandoned) > 0  # an exact "bound" cuts every candidate worse than the best


def test_candidate_bound_abandons_only_above_it(model):
    ids = blocks(4)
    for vocab in (0, 8, 128):  # exact partial sums only; a lower bound from 8 (+ target) tokens; all 128 tokens
        trunk = Trunk(model, ids, batch_size=1, bound_vocab=vocab)
        trunk.refresh(np.zeros((6, 2), dtype=bool))
        total = trunk.candidate_nll(2, "layer")
        assert total is not None and len(total) == 4
        assert torch.equal(trunk.candidate_nll(2, "layer", bound=float(total.sum()) * (1 + 1e-9)), total)
        assert trunk.candidate_nll(2, "layer", bound=float(total[:3].sum()) * 0.999) is None  # cut by the 3rd block
        assert trunk.candidate_nll(2, "layer", bound=0.0) is None
        near = trunk.candidate_nll(2, "layer", bound=float(total.sum()) * 0.999)
        if vocab == 0:  # only partial sums are compared: a complete total is kept
            assert torch.equal(near, total)
        elif vocab == 128:  # the "bound" over the whole vocabulary is the exact NLL: cut before the head
            assert near is None
    bi = trunk.block_influence()
    assert bi.shape == (6,) and np.all(bi >= -1e-6) and np.all(bi <= 2)


def test_vocabulary_lower_bound_never_exceeds_the_nll(model):
    ids = blocks(3)
    for vocab, tight in ((4, False), (32, False), (128, True)):
        trunk = Trunk(model, ids, batch_size=3, bound_vocab=vocab)
        trunk.refresh(removal_mask([1], 6, "layer"))
        h = model.model.norm(trunk.states[6][0][:, :-1])
        exact, lower = trunk.nll(trunk.states[6][0], 0), trunk._nll_lower_bound(h, 0)
        assert torch.all(lower <= exact + 1e-4), vocab
        assert torch.allclose(lower, exact, atol=1e-3) == tight, vocab
        weight, _, where = trunk._vocab()
        assert len(weight) <= vocab + ids[:, 1:].unique().numel() and torch.all(where[ids[:, 1:]] >= 0)
    with pytest.raises(ValueError, match="bound_vocab must be non-negative"):
        Trunk(model, ids, bound_vocab=-1)


def test_trunk_mask_nll_equals_the_pruned_model(model):
    ids = blocks(3)
    trunk = Trunk(model, ids, batch_size=2)
    trunk.refresh(np.zeros((6, 2), dtype=bool))
    for layers in ([2], [1, 4], [3, 4, 5]):
        got = float(trunk.mask_nll(removal_mask(layers, 6, "layer")).sum()) / trunk.n_predictions().sum()
        assert got == pytest.approx(mean_nll(drop_layers(model, layers), ids), abs=1e-5)


def test_context_scores_and_errors(model):
    ids = blocks(3)
    ctx = LayerScores(model=model, calib=ids, batch_size=2)
    for name, score in SCORES.items():
        values = ctx.score(name)
        assert values.shape == ((6,) if score.granularity == "layer" else (12,)), name
        assert np.isfinite(values).all(), name
    with pytest.raises(UnknownScoreError, match="unknown score 'nope'"):
        ctx.score("nope")
    proxy_only = LayerScores(layer_similarity(model, ids))
    with pytest.raises(ValueError, match="measures the model itself"):
        proxy_only.score("ablation-nll")
    one = tiny_llama(1)
    with pytest.raises(ValueError, match="at least 2 layers"):
        ablation_scan(one, ids)
    with pytest.raises(ValueError, match="at least 2 layers"):
        LayerScores(model=one, calib=ids).score("ablation-nll")


def test_swap_search_only_improves_and_reports_the_pruned_models_loss(model):
    ids = blocks(4)
    start = [0, 1, 2]
    run = swap_search(model, ids, start, batch_size=2)
    assert run.nll <= run.start_nll
    assert run.start_nll == pytest.approx(mean_nll(drop_layers(model, start), ids), abs=1e-5)
    assert run.nll == pytest.approx(mean_nll(drop_layers(model, run.removed), ids), abs=1e-5)
    assert len(run.removed) == 3 and len(run.swaps) <= 8
    with pytest.raises(ValueError, match="start must name"):
        swap_search(model, ids, [])
    sets = [start, [1, 3, 5], [3, 4, 5]]
    best = min(sets, key=lambda s: mean_nll(drop_layers(model, s), ids))
    multi = swap_search(model, ids, start, batch_size=2, max_rounds=0, alternatives=sets[1:])
    assert multi.start == best and multi.nll == pytest.approx(mean_nll(drop_layers(model, best), ids), abs=1e-5)
    with pytest.raises(ValueError, match="every starting set must name 3"):
        swap_search(model, ids, start, alternatives=[[1, 2]])


def test_trunk_nll_is_the_plain_cross_entropy(model):
    """The head NLL through ``next_token_nll`` equals F.cross_entropy's per-sample sum (float noise only)."""
    ids = blocks(3)
    trunk = Trunk(model, ids, batch_size=3)
    trunk.refresh(removal_mask([2], 6, "layer"))
    got = trunk.nll(trunk.states[6][0], 0)
    with torch.no_grad():
        logits = trunk.logits(trunk.states[6][0])  # (B, T-1, V)
        expected = torch.stack([F.cross_entropy(logits[i], ids[i, 1:], reduction="sum") for i in range(3)]).double()
    assert got.dtype == torch.float64
    assert torch.allclose(got, expected, rtol=1e-6, atol=0)


def test_head_products_over_several_samples_give_each_samples_nll(model, monkeypatch):
    """The LM head runs on groups of samples of at most HEAD_ROWS positions; every sample gets its own sums."""
    from frankenllama.scoring import trunk as trunk_module

    ids = blocks(5, t=16)
    trunk = Trunk(model, ids, batch_size=5, bound_vocab=8)
    trunk.refresh(removal_mask([2], 6, "layer"))
    h = model.model.norm(trunk.states[6][0][:, :-1])
    got = {}
    for rows, sizes in ((1, [1] * 5), (30, [2, 2, 1]), (1024, [5])):
        monkeypatch.setattr(trunk_module, "HEAD_ROWS", rows)
        assert [g.stop - g.start for g in trunk_module._sample_groups(h)] == sizes
        got[rows] = trunk._head_nll(h, 0), trunk._nll_lower_bound(h, 0)
    with torch.no_grad():
        logits = trunk.logits(trunk.states[6][0])
        one_by_one = torch.stack([F.cross_entropy(logits[i], ids[i, 1:], reduction="sum") for i in range(5)]).double()
    for rows in (30, 1024):
        assert torch.allclose(got[rows][0], got[1][0], rtol=1e-6, atol=0) and torch.allclose(got[rows][0], one_by_one, rtol=1e-6)
        assert torch.allclose(got[rows][1], got[1][1], rtol=1e-6, atol=0)
    assert len(set(got[1][0].tolist())) == 5  # five different samples, five different sums


def test_context_measures_once_under_the_same_cache_keys(model):
    """Each measurement is computed once, under the store keys (kind, params) it always had."""
    from frankenllama.units import layer_units

    ids = blocks(3)
    calls: list[tuple[str, dict]] = []
    memo: dict[str, dict] = {}

    def store(kind, params, compute):
        key = f"{kind}:{sorted(params.items())}"
        if key not in memo:
            calls.append((kind, params))
            memo[key] = compute()
        return memo[key]

    ctx = SelectionContext(model=model, calib=ids, batch_size=2, store=store, sublayer_blocks=2)
    assert LayerScores is SelectionContext
    sleb = ctx.greedy(2).chosen(2)
    other = [0, 1] if sleb != [0, 1] else [4, 5]
    run = ctx.swap(sleb, [list(reversed(other)), sleb, other])
    assert ctx.swap(list(reversed(sleb)), [other]) == run  # same starts in another order: the cached run
    part = ctx.part_swap(run.removed)
    assert ctx.part_swap(list(reversed(run.removed))) == part
    assert [kind for kind, _ in calls] == ["greedy-layer", "ablation-layer", "swap", "ablation-sublayer", "part-swap"]  # the scan inside greedy's
    params = dict(calls)
    assert params["ablation-layer"] == {"batch_size": 2}
    assert params["ablation-sublayer"] == {"batch_size": 2, "blocks": 2}
    assert params["greedy-layer"] == {"k": 2, "shortlist": None, "batch_size": 2}
    assert params["swap"] == {"k": 2, "start": sleb, "others": [tuple(other)], "batch_size": 2}
    assert params["part-swap"] == {"k": 2, "start": layer_units(run.removed), "width": 4, "rounds": 1,
                                   "cost_blocks": 2, "batch_size": 2}
    assert part.start == layer_units(run.removed) and run.nll <= run.start_nll
