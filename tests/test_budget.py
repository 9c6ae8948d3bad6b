"""Budgets on tiny in-process llamas: the fit is under the target and is the fewest removals that fit;
bad budgets are refused before anything is computed."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_llama
from frankenllama.budget import Budget, BudgetError, count_params, fit_budget, unit_params
from frankenllama.scoring import SelectionContext
from frankenllama.selection import select_layers
from frankenllama.sublayer import prune_sublayers
from frankenllama.surgery import drop_layers

L = 6


@pytest.fixture(scope="module")
def ctx():
    ids = torch.randint(3, 128, (3, 12), generator=torch.Generator().manual_seed(0))
    return SelectionContext(model=tiny_llama(L), calib=ids, batch_size=3)


def test_budget_validation():
    for bad in (dict(), dict(params=10, bytes=10), dict(params=0), dict(bytes=-1), dict(layer_fraction=0.0),
                dict(layer_fraction=1.5), dict(params=10, dtype="float13"), dict(params=True)):
        with pytest.raises(ValueError):
            Budget(**bad)
    assert Budget(bytes=100, dtype="bfloat16").param_limit() == 50
    assert Budget(bytes=100, dtype="float32").param_limit() == 25


@pytest.mark.parametrize("strategy", ["block-influence", "sleb", "reverse"])
def test_layer_budget_is_met_with_fewest_layers(ctx, strategy):
    total, layer = count_params(ctx.model), int(unit_params(ctx.model, "layer")[0])
    fit = fit_budget(ctx, Budget(params=total - 2 * layer - 1), strategy)  # needs 3 layers gone
    assert fit.k == 3 and fit.num_params <= total - 2 * layer - 1
    assert fit.num_params == count_params(drop_layers(ctx.model, fit.removed))
    by_bytes = fit_budget(ctx, Budget(bytes=(total - 2 * layer) * 2, dtype="bfloat16"), strategy)
    assert by_bytes.k == 2 and by_bytes.num_bytes == by_bytes.num_params * 2
    half = fit_budget(ctx, Budget(layer_fraction=0.5), strategy)
    assert half.kept_layers == 3


@pytest.mark.parametrize("strategy", ["sublayer-nll", "blockpruner", "part-swap"])
def test_sublayer_budget_matches_the_physically_pruned_model(ctx, strategy):
    total, layer = count_params(ctx.model), int(unit_params(ctx.model, "layer")[0])
    fit = fit_budget(ctx, Budget(params=total - layer), strategy)
    assert fit.num_params <= total - layer
    assert count_params(prune_sublayers(ctx.model, fit.removed)) == fit.num_params
    if strategy == "part-swap":  # pairs of attention and MLP sub-blocks: exactly one block's worth
        assert fit.k == 2 and fit.num_params == total - layer
    elif fit.k > 1:  # the strategy's choice of one sub-block fewer does not fit: the fit is the fewest removals
        fewer = select_layers(ctx, fit.k - 1, strategy)
        assert total - int(unit_params(ctx.model, "sublayer")[fewer].sum()) > total - layer


def test_bad_budgets_are_refused(ctx):
    total = count_params(ctx.model)
    with pytest.raises(BudgetError, match="larger than the model"):
        fit_budget(ctx, Budget(params=total), "block-influence")
    with pytest.raises(BudgetError, match="larger than the model"):
        fit_budget(ctx, Budget(layer_fraction=1.0), "block-influence")
    with pytest.raises(BudgetError, match="no configuration meets"):
        fit_budget(ctx, Budget(params=1000), "sleb")
    with pytest.raises(BudgetError, match="keeps none"):
        fit_budget(ctx, Budget(layer_fraction=0.1), "block-influence")
    with pytest.raises(BudgetError, match="layer strategies"):
        fit_budget(ctx, Budget(layer_fraction=0.5), "sublayer-nll")
    with pytest.raises(KeyError, match="unknown strategy"):
        fit_budget(ctx, Budget(params=total - 10), "nope")
    with pytest.raises(TypeError, match="SelectionContext"):
        fit_budget(ctx.similarity, Budget(params=total - 10), "block-influence")
