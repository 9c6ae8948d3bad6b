"""Pruning to a budget: the configuration a strategy finds under a size target.

A ``Budget`` is a ceiling on the pruned model: a parameter count, a number of bytes of parameters at
a dtype (``params × itemsize``; buffers such as rotary tables are not counted), or a fraction of the
blocks kept. ``fit_budget`` returns the strategy's choice with the fewest removed units that fits —
for a strategy whose damage grows with k (all of ours), the best configuration it finds under the
budget. At sub-layer granularity an attention sub-block (with its norm) and an MLP sub-block differ
in size, so the number of removed sub-blocks is searched upward from the least that could fit.

Parameters are counted once when shared (tied input and output embeddings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from frankenllama.models import decoder_layers
from frankenllama.scoring import SelectionContext
from frankenllama.selection import get_strategy, select_layers
from frankenllama.units import num_units, whole_layers


class BudgetError(ValueError):
    """A budget that no configuration meets, or one that needs no pruning at all."""


@dataclass(frozen=True)
class Budget:
    """A size target for the pruned model: exactly one of ``params``, ``bytes`` or ``layer_fraction``.

    ``bytes`` is measured at ``dtype`` (any torch dtype name, e.g. ``"bfloat16"``, ``"int8"``);
    ``layer_fraction`` is the largest fraction of the blocks the pruned model may keep.
    """

    params: int | None = None
    bytes: int | None = None
    dtype: str = "bfloat16"
    layer_fraction: float | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("params", "bytes", "layer_fraction") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of params, bytes or layer_fraction (got {given or 'none'})")
        if self.params is not None and (isinstance(self.params, bool) or not isinstance(self.params, int) or self.params < 1):
            raise ValueError(f"params must be a positive integer, got {self.params!r}")
        if self.bytes is not None and (isinstance(self.bytes, bool) or not isinstance(self.bytes, int) or self.bytes < 1):
            raise ValueError(f"bytes must be a positive integer, got {self.bytes!r}")
        if self.layer_fraction is not None and not 0.0 < self.layer_fraction <= 1.0:
            raise ValueError(f"layer_fraction must be in (0, 1], got {self.layer_fraction!r}")
        if not isinstance(getattr(torch, self.dtype, None), torch.dtype):
            raise ValueError(f"unknown dtype {self.dtype!r}; use a torch dtype name such as 'bfloat16' or 'int8'")

    @property
    def itemsize(self) -> int:
        return torch.empty((), dtype=getattr(torch, self.dtype)).element_size()

    def param_limit(self) -> int | None:
        """The parameter ceiling implied by ``params`` or ``bytes`` (None for a layer-fraction budget)."""
        if self.params is not None:
            return self.params
        if self.bytes is not None:
            return self.bytes // self.itemsize
        return None


@dataclass(frozen=True)
class BudgetFit:
    """What ``fit_budget`` found: the strategy's removed units and the pruned model's size."""

    strategy: str
    granularity: str
    k: int
    removed: list[int]
    num_params: int
    num_bytes: int  # at the budget's dtype
    kept_layers: int


def count_params(model: nn.Module) -> int:
    """Parameters of ``model``, shared ones counted once."""
    return sum(p.numel() for p in model.parameters())


def unit_params(model: nn.Module, granularity: str) -> np.ndarray:
    """Parameters each unit holds, (U,): a block, or an attention / MLP sub-block with the norm feeding it."""
    sizes = []
    for block in decoder_layers(model):
        attn = sum(p.numel() for m in (block.self_attn, block.input_layernorm) for p in m.parameters())
        mlp = sum(p.numel() for m in (block.mlp, block.post_attention_layernorm) for p in m.parameters())
        sizes.extend([attn + mlp] if granularity == "layer" else [attn, mlp])  # sub-block ids 2ℓ + ATTN, 2ℓ + MLP
    return np.array(sizes, dtype=np.int64)


def fit_budget(source: SelectionContext, budget: Budget, strategy: str) -> BudgetFit:
    """The configuration ``strategy`` finds under ``budget``: its choice with the fewest removed units that fits.

    Refuses, before any scoring, a budget the model already meets ("larger than the model") and one
    that no configuration can meet (every unit but the smallest removed is still too large).
    """
    spec = get_strategy(strategy)
    if not isinstance(source, SelectionContext):
        raise TypeError("fit_budget needs a SelectionContext (the model is needed to count parameters)")
    source.require_model("a budget")
    model = source.model
    L = len(decoder_layers(model))
    sizes = unit_params(model, spec.granularity)
    U = num_units(L, spec.granularity)  # type: ignore[arg-type]
    total = count_params(model)

    def fit(removed: list[int]) -> BudgetFit:
        params = total - int(sizes[removed].sum())
        mask_layers = removed if spec.granularity == "layer" else whole_layers(removed)
        return BudgetFit(strategy, spec.granularity, len(removed), sorted(removed), params, params * budget.itemsize,
                         L - len(mask_layers))

    if budget.layer_fraction is not None:
        if spec.granularity != "layer":
            raise BudgetError(f"a layer_fraction budget applies to layer strategies; give {strategy!r} a params or bytes budget")
        keep = math.floor(budget.layer_fraction * L + 1e-9)
        if keep >= L:
            raise BudgetError(f"layer_fraction {budget.layer_fraction} keeps all {L} layers: the budget is larger than the model, nothing to remove")
        if keep < 1:
            raise BudgetError(f"layer_fraction {budget.layer_fraction} of {L} layers keeps none: no configuration meets it (keep at least 1)")
        return fit(select_layers(source, L - keep, strategy))

    limit = budget.param_limit()
    assert limit is not None
    if total <= limit:
        raise BudgetError(f"the model has {total:,} parameters, within the budget of {limit:,}: the budget is larger than the model, nothing to remove")
    smallest = total - int(sizes.sum() - sizes.min())
    if smallest > limit:
        raise BudgetError(
            f"no configuration meets {limit:,} parameters: even keeping a single {spec.granularity} unit leaves {smallest:,} "
            "(embeddings, head and norms stay)"
        )
    need = total - limit
    if spec.paired:  # k/2 blocks' worth of attention and MLP sub-blocks
        blocks = np.sort(unit_params(model, "layer"))[::-1]
        k, step = 2 * int(np.searchsorted(np.cumsum(blocks), need) + 1), 2
    else:
        k, step = int(np.searchsorted(np.cumsum(np.sort(sizes)[::-1]), need) + 1), 1  # fewest units that could remove enough
    while k <= U - 1:
        result = fit(select_layers(source, k, strategy))
        if result.num_params <= limit:
            return result
        k += step
    raise BudgetError(f"strategy {strategy!r} finds no configuration under {limit:,} parameters")
