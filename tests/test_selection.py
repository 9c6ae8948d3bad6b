"""Selection strategies on tiny in-process llamas, plus one real-model check.

Invariants: every strategy returns k distinct units in range; the foundation's call with a bare
``LayerSimilarity`` still works for the proxies; nested strategies are nested; reverse, contiguous
and Taylor+ obey their definitions; bad input is refused with a message that says what to do.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_llama
from frankenllama import select_layers
from frankenllama.cache import cached_arrays, stored_arrays
from frankenllama.loss import next_token_nll
from frankenllama.scoring import ATTN, SCORES, SelectionContext, greedy_removal, part_swap_search, swap_search
from frankenllama.selection import KINDS, STRATEGIES, SWAP_STARTS, UnknownStrategyError, check_k, methods_table, swap_starts
from frankenllama.sublayer import prune_sublayers
from frankenllama.surgery import drop_layers
from frankenllama.units import layer_units, part_of

L = 8


@pytest.fixture(scope="module")
def ctx():
    model = tiny_llama(L, seed=2)
    ids = torch.randint(3, 128, (4, 16), generator=torch.Generator().manual_seed(1))
    return SelectionContext(model=model, calib=ids, batch_size=2)


def mean_nll(model, ids) -> float:
    """Mean next-token NLL of a plain forward pass."""
    with torch.no_grad():
        return float(next_token_nll(model(ids).logits, ids).double().mean())


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("k", [1, 3])
def test_every_strategy_returns_k_distinct_units(ctx, strategy, k):
    k = 2 * k if STRATEGIES[strategy].paired else k  # paired: attention and MLP sub-blocks in equal numbers
    units = select_layers(ctx, k, strategy)
    limit = L if STRATEGIES[strategy].granularity == "layer" else 2 * L
    assert units == sorted(set(units)) and len(units) == k
    assert all(0 <= u < limit for u in units)


@pytest.mark.parametrize("strategy", [s for s, spec in STRATEGIES.items() if spec.nested])
def test_nested_strategies_are_nested(ctx, strategy):
    picks = [set(select_layers(ctx, k, strategy)) for k in range(1, 5)]
    assert all(a < b for a, b in zip(picks, picks[1:]))


def test_foundation_call_with_a_bare_similarity(ctx):
    sim = ctx.similarity
    assert select_layers(sim, 3, "block-influence") == sorted(np.argsort(sim.block_influence, kind="stable")[:3].tolist())
    run = select_layers(sim, 3, "angular-block")
    assert run == list(range(run[0], run[0] + 3))
    with pytest.raises(ValueError, match="measures the model itself"):
        select_layers(sim, 2, "sleb")


def test_definitions(ctx):
    assert select_layers(ctx, 3, "reverse") == [L - 4, L - 3, L - 2]
    run = select_layers(ctx, 3, "contiguous-nll")
    delta = ctx.score("ablation-nll")
    sums = [delta[s : s + 3].sum() for s in range(L - 2)]
    assert run == list(range(int(np.argmin(sums)), int(np.argmin(sums)) + 3))
    plus = select_layers(ctx, L - 2, "taylor+")  # keeps round(L/8) = 1 first and round(L/16) = 0 last blocks
    assert 0 not in plus
    order = ctx.greedy(3).order
    assert select_layers(ctx, 3, "sleb") == sorted(order[:3])
    assert select_layers(ctx, 2, "ablation-nll") == sorted(np.argsort(delta, kind="stable")[:2].tolist())


@pytest.mark.parametrize("strategy,k", [("sleb", 2), ("swap-search", 2), ("part-swap", 4)])
def test_a_shallow_greedy_run_chooses_what_the_deep_one_does(ctx, strategy, k):
    """A context without ``greedy_steps`` (notebook 02's and compress's) runs the greedy search only as deep as
    asked; one with it runs deeper at once: the first steps are the same, so every choice is too."""
    shallow = SelectionContext(ctx.similarity, ctx.model, ctx.calib, batch_size=2)
    deep = SelectionContext(ctx.similarity, ctx.model, ctx.calib, batch_size=2, greedy_steps=L - 2)
    assert select_layers(shallow, k, strategy) == select_layers(deep, k, strategy)
    asked = k // 2 if STRATEGIES[strategy].paired else k
    assert len(shallow.greedy(1).order) == asked < len(deep.greedy(1).order) == L - 2


def test_greedy_runs_stored_at_another_depth_are_read_or_extended(ctx, tmp_path, monkeypatch):
    """With a disk store and its peek (as notebook 02 and compress share one), a later context reads a deeper
    stored run instead of searching again, and extends a shallower one from where it stopped."""
    import frankenllama.scoring.context as context_module

    runs, starts = [], []
    search = context_module.greedy_removal

    def recorded(*args, start=(), **kw):  # the real search; records where each run starts
        starts.append(list(start))
        return search(*args, start=start, **kw)

    monkeypatch.setattr(context_module, "greedy_removal", recorded)

    def store(kind, params, compute):
        def counted():
            if kind.startswith("greedy"):  # the store also holds the scan SLEB's first step reads
                runs.append(params["k"])
            return compute()

        return cached_arrays("scores", {"kind": kind, "params": params}, counted, root=tmp_path)

    def peek(kind, params):
        return stored_arrays("scores", {"kind": kind, "params": params}, root=tmp_path)

    def context(**kw):
        return SelectionContext(ctx.similarity, ctx.model, ctx.calib, batch_size=2, store=store, peek=peek, **kw)

    reference = SelectionContext(ctx.similarity, ctx.model, ctx.calib, batch_size=2).greedy(5)
    assert context().greedy(2).order == reference.order[:2] and runs == [2]  # compress: two steps, stored
    deep = context(greedy_steps=5).greedy(3)  # notebook 02 afterwards: from step 3 on, stored under 5
    assert deep.order == reference.order and np.allclose(deep.nll, reference.nll, atol=1e-6) and runs == [2, 5]
    assert starts[-1] == reference.order[:2]
    assert len(deep.evaluated) == len(reference.evaluated)
    assert context().greedy(4).order == reference.order and runs == [2, 5]  # read, nothing searched
    assert select_layers(context(), 4, "sleb") == sorted(reference.order[:4]) and runs == [2, 5]


def test_bad_input_is_refused(ctx):
    with pytest.raises(UnknownStrategyError, match="unknown strategy 'nope'"):
        select_layers(ctx, 2, "nope")
    for k in (0, L, -1):
        with pytest.raises(ValueError, match="outside 1"):
            select_layers(ctx, k, "block-influence")
    with pytest.raises(ValueError, match=f"outside 1 … {2 * L - 1}"):
        select_layers(ctx, 2 * L, "sublayer-nll")
    assert len(select_layers(ctx, L + 1, "sublayer-nll")) == L + 1  # more sub-blocks than blocks is fine
    with pytest.raises(TypeError):
        check_k(2.0, L)
    with pytest.raises(TypeError, match="LayerSimilarity or SelectionContext"):
        select_layers("similarity", 2, "block-influence")


@pytest.mark.integration
def test_real_model_cached_search_matches_naive(smollm2):
    """On SmolLM2 (1 block × 48 tokens): the cached SLEB picks what the naive search picks."""
    from frankenllama.data import load_corpus, token_blocks

    model, tokenizer = smollm2
    ids = token_blocks(tokenizer, load_corpus("wiki-leads", "calib"), 48, max_blocks=1)
    cached = greedy_removal(model, ids, 2, batch_size=1, cached=True, shortlist=4)
    naive = greedy_removal(model, ids, 2, batch_size=1, cached=False, shortlist=4)
    print(cached, naive)
    assert cached.order == naive.order
    assert np.allclose(cached.nll, naive.nll, rtol=1e-4)  # same blocks, different kernels: fp32 rounding only


def test_best_strategy_table_reports_margins_and_ties():
    import pandas as pd

    from frankenllama.stages import best_strategies, best_summary

    rows = [("block-influence", "layer", 6, [12, 13], 40.0), ("angular-block", "layer", 6, [13, 14], 33.0),
            ("swap-search", "layer", 6, [13, 14], 33.0), ("sleb", "layer", 3, [14], 21.0),
            ("block-influence", "layer", 3, [13], 25.0), ("angular-block", "layer", 3, [15], 26.0),
            ("sublayer-nll", "sublayer", 6, [26, 29], 30.0)]
    curves = pd.DataFrame([{"strategy": s, "granularity": g, "k": k, "units": l,
                            "layers": l if g == "layer" else [], "eval_ppl": p} for s, g, k, l, p in rows])
    best = best_strategies(curves).set_index("k")
    assert best.loc[3, "strategy"] == "sleb" and best.loc[3, "vs block-influence"] == pytest.approx(4.0)
    assert best.loc[6, "strategy"] == "angular-block" and best.loc[6, "tied_with"] == ["swap-search"]
    assert best.loc[6, "vs angular-block"] == 0.0
    text = best_summary(best.reset_index())
    assert "no better than angular-block" in text and "4.0 below block-influence" in text
    overall = best_strategies(curves, granularity=None).set_index("k")
    assert overall.loc[6, "strategy"] == "sublayer-nll" and overall.loc[6, "vs angular-block"] == pytest.approx(3.0)
    assert "13.attn" in best_summary(overall.reset_index())


def test_swap_search_composes_sleb_and_the_proxies_starts(ctx):
    """swap-search = the context's swap run from SLEB's choice with the SWAP_STARTS choices as alternatives."""
    k = 3
    sleb = select_layers(ctx, k, "sleb")
    starts = swap_starts(ctx, k)
    assert starts == [STRATEGIES[s].select(ctx, k) for s in SWAP_STARTS]
    run = ctx.swap(sleb, starts)
    assert select_layers(ctx, k, "swap-search") == run.removed
    assert run.start in [sleb] + [sorted(s) for s in starts]
    for start in [sleb] + starts:  # never worse on calibration than any of its starts
        assert run.nll <= mean_nll(drop_layers(ctx.model, start), ctx.calib) + 1e-5


def test_part_swap_keeps_the_size_and_only_improves(ctx):
    layers = select_layers(ctx, 2, "swap-search")
    run = ctx.part_swap(layers)
    assert run.start == layer_units(layers) == sorted(2 * l + p for l in layers for p in (0, 1))
    assert run.nll <= run.start_nll
    assert run.start_nll == pytest.approx(swap_search(ctx.model, ctx.calib, layers, max_rounds=0).nll, abs=1e-6)
    assert sum(part_of(u) == ATTN for u in run.removed) == 2 and len(run.removed) == 4  # as many attention and MLP as 2 blocks
    assert all(part_of(r) == part_of(c) == ATTN for r, c in run.swaps)  # attention for attention only, by default
    assert run.nll == pytest.approx(mean_nll(prune_sublayers(ctx.model, run.removed), ctx.calib), abs=1e-5)
    assert select_layers(ctx, 4, "part-swap") == run.removed
    # with every sub-block a candidate, the result beats (or ties) every same-kind single swap of the start
    cost = np.zeros(2 * L)
    wide = part_swap_search(ctx.model, ctx.calib, run.start, cost, width=2 * L, parts=(0, 1), batch_size=2, max_rounds=1)
    for r in run.start:
        for c in range(r % 2, 2 * L, 2):
            if c not in run.start:
                other = sorted(set(run.start) - {r} | {c})
                assert wide.nll <= mean_nll(prune_sublayers(ctx.model, other), ctx.calib) + 1e-5
    with pytest.raises(ValueError, match="k must be even"):
        select_layers(ctx, 3, "part-swap")
    with pytest.raises(ValueError, match="start must name sub-blocks"):
        part_swap_search(ctx.model, ctx.calib, [2 * L], cost)
    with pytest.raises(ValueError, match="one number per sub-block"):
        part_swap_search(ctx.model, ctx.calib, [0], cost[:3])


def test_methods_table_cites_every_strategy_and_score():
    table = methods_table()
    assert list(table.columns) == ["name", "role", "granularity", "kind", "what", "cite", "reads"]
    assert len(table) == len(STRATEGIES) + len(SCORES)
    assert table[table.role == "strategy"].name.tolist() == list(STRATEGIES)
    assert table[table.role == "score"].name.tolist() == list(SCORES)
    for row in table.itertuples():
        assert row.what and row.cite and row.reads == KINDS[row.kind], row.name
        assert "arXiv:" in row.cite or row.cite.startswith("this workbook"), row.name
        assert row.granularity in ("layer", "sublayer"), row.name
    # the flags the stages read are those the registry had before ``kind`` replaced them
    assert sorted(s for s, spec in STRATEGIES.items() if not spec.needs_model) == [
        "angular", "angular-block", "angular-block-all", "block-influence", "reverse"]
    assert sorted(s for s, spec in STRATEGIES.items() if spec.search) == ["blockpruner", "part-swap", "sleb", "swap-search"]
    assert all(STRATEGIES[s].granularity == "sublayer" for s in ("sublayer-nll", "part-swap", "blockpruner"))
