"""Unit ids and masks (``frankenllama.units``): invariants over every id of small stacks.

Invariants: a sub-block id splits into (layer, part) and back; ``describe`` names each id once and
its names parse back to the id; a sub-block mask read row-major is the indicator of the ids; the
sub-blocks of whole blocks mask exactly what the blocks mask, and ``whole_layers`` recovers them.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from frankenllama.units import (
    ATTN,
    MLP,
    PARTS,
    bypass_flags,
    check_sublayer_ids,
    describe,
    layer_of,
    layer_units,
    num_units,
    part_of,
    removal_mask,
    sublayer_id,
    whole_layers,
)


@pytest.mark.parametrize("L", [1, 3, 6])
def test_ids_round_trip(L):
    assert num_units(L, "layer") == L and num_units(L, "sublayer") == 2 * L
    for u in range(num_units(L, "sublayer")):
        layer, part = layer_of(u), part_of(u)
        assert 0 <= layer < L and part in (ATTN, MLP)
        assert sublayer_id(layer, part) == sublayer_id(layer, PARTS[part]) == u
        (name,) = describe([u])
        block, kind = name.split(".")
        assert sublayer_id(int(block), kind) == u
    assert layer_of(4, "layer") == 4


def test_describe_and_layer_units_by_hand():
    assert describe([27, 26]) == ["13.attn", "13.mlp"]
    assert layer_units([5, 3]) == [6, 7, 10, 11]
    assert whole_layers([6, 7, 10, 12, 13, 1]) == [3, 6]
    assert whole_layers([0, 3]) == []  # attention of block 0, MLP of block 1


@pytest.mark.parametrize("L", [2, 4])
def test_masks_agree_across_granularities(L):
    for r in range(L):
        for layers in itertools.combinations(range(L), r):
            ids = layer_units(layers)
            assert np.array_equal(removal_mask(ids, L, "sublayer"), removal_mask(layers, L, "layer"))
            assert whole_layers(ids) == list(layers)
    for ids in itertools.combinations(range(2 * L), 3):
        mask = removal_mask(ids, L, "sublayer")
        assert mask.shape == (L, 2) and mask.dtype == bool
        assert np.flatnonzero(mask.reshape(-1)).tolist() == list(ids)  # row-major index = 2ℓ + part = id


def test_bypass_flags_keep_what_the_mask_keeps():
    mask = removal_mask([sublayer_id(1, "mlp")], 3, "sublayer")
    assert bypass_flags(1, "layer", mask) == (False, False)
    assert bypass_flags(sublayer_id(1, "attn"), "sublayer", mask) == (False, False)  # its MLP is already gone
    assert bypass_flags(sublayer_id(2, "attn"), "sublayer", mask) == (False, True)
    assert bypass_flags(sublayer_id(2, "mlp"), "sublayer", mask) == (True, False)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="unknown granularity"):
        num_units(4, "block")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="part must be one of"):
        sublayer_id(0, "ffn")
    with pytest.raises(ValueError, match="part must be ATTN"):
        sublayer_id(0, 2)
    assert check_sublayer_ids([3, 0], 2) == [0, 3]
    with pytest.raises(ValueError, match="out of range"):
        check_sublayer_ids([4], 2)
    with pytest.raises(ValueError, match="duplicate"):
        check_sublayer_ids([1, 1], 2)
    with pytest.raises(ValueError, match="keep at least one"):
        check_sublayer_ids(range(4), 2)
    with pytest.raises(TypeError):
        check_sublayer_ids([1.0], 2)
