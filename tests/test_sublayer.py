"""Sub-layer surgery on tiny in-process llamas.

Invariants: a sub-block-pruned model physically lacks the removed weights (the parameter count
drops by exactly their size) and gives the same logits as the original with those sub-blocks
bypassed; a block losing both sub-blocks is dropped whole; generation with the KV cache matches
generation without it even when the first attention is gone; saving and reloading through
frankenllama gives the same logits, while plain transformers re-creates random sub-blocks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import tiny_llama
from frankenllama.budget import count_params, unit_params
from frankenllama.scoring import Trunk
from frankenllama.sublayer import (
    RemovedAttention,
    RemovedMLP,
    describe,
    load_sublayer_pruned,
    prune_sublayers,
    removed_sublayers,
    restore_sublayers,
    sublayer_id,
)
from frankenllama.surgery import lineage
from frankenllama.units import removal_mask

IDS = torch.randint(3, 128, (3, 12), generator=torch.Generator().manual_seed(0))


def bypassed_logits(model, units):
    """Logits of ``model`` with sub-blocks ``units`` skipped, computed from the unpruned modules."""
    L = len(model.model.layers)
    trunk = Trunk(model, IDS, batch_size=len(IDS))
    with torch.no_grad():
        x = trunk.run(trunk.embed(0), 0, 0, removal_mask(units, L, "sublayer"))
        return model.lm_head(model.model.norm(x))


@pytest.mark.parametrize("units", [[0], [3], [0, 5], [2, 3, 6]])
def test_pruned_model_equals_bypassed_original_and_drops_weights(units):
    model = tiny_llama(4)
    pruned = prune_sublayers(model, units)
    with torch.no_grad():
        assert torch.allclose(pruned(IDS).logits, bypassed_logits(model, units), atol=1e-5)
    sizes = unit_params(model, "sublayer")
    assert count_params(pruned) == count_params(model) - int(sizes[units].sum())
    assert count_params(model) == sum(p.numel() for p in tiny_llama(4).parameters())  # source untouched
    for name, module in pruned.named_modules():
        if isinstance(module, (RemovedAttention, RemovedMLP)):
            assert not list(module.parameters()), name


def test_a_block_losing_both_sub_blocks_is_dropped_whole():
    model = tiny_llama(4)
    pruned = prune_sublayers(model, [sublayer_id(1, "attn"), sublayer_id(1, "mlp"), sublayer_id(2, "attn")])
    assert pruned.config.num_hidden_layers == 3
    assert lineage(pruned)["kept_layers"] == [0, 2, 3]
    assert removed_sublayers(pruned) == {"attn": [1], "mlp": []}  # block 2 is now block 1
    assert describe([2, 3, 5]) == ["1.attn", "1.mlp", "2.mlp"]


def test_generation_with_cache_matches_without_when_first_attention_is_gone():
    pruned = prune_sublayers(tiny_llama(4), [0, 5])
    prompt = IDS[:1, :5]
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=2)
    with torch.no_grad():
        cached = pruned.generate(prompt, use_cache=True, **kwargs)
        plain = pruned.generate(prompt, use_cache=False, **kwargs)
    assert torch.equal(cached, plain)


def test_save_and_reload_through_frankenllama(tmp_path):
    from conftest import tiny_tokenizer

    model = tiny_llama(4)
    units = [0, 3, 6]
    pruned = prune_sublayers(model, units)
    pruned.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    again, _ = load_sublayer_pruned(tmp_path, device="cpu")
    with torch.no_grad():
        expected = pruned(IDS).logits
        assert torch.allclose(again(IDS).logits, expected, atol=1e-6)
        assert count_params(again) == count_params(pruned)
        plain = AutoModelForCausalLM.from_pretrained(tmp_path)  # plain transformers: random sub-blocks come back
        assert count_params(plain) == count_params(model)
        assert not torch.allclose(plain.eval()(IDS).logits, expected, atol=1e-3)
    restore_sublayers(plain)  # the hook ``load_model`` can call after from_pretrained
    with torch.no_grad():
        assert torch.allclose(plain(IDS).logits, expected, atol=1e-6)


def test_dropping_blocks_of_a_sub_block_pruned_model_keeps_its_record(tmp_path):
    from conftest import tiny_tokenizer

    from frankenllama.models import load_model
    from frankenllama.surgery import drop_layers

    model = tiny_llama(4)
    partly = prune_sublayers(model, [sublayer_id(1, "attn"), sublayer_id(3, "mlp")])
    pruned = drop_layers(partly, [0])  # blocks 1, 2, 3 become 0, 1, 2
    assert removed_sublayers(pruned) == {"attn": [0], "mlp": [2]}
    assert pruned.config.frankenllama["removed_sublayers"] == {"attn": [0], "mlp": [2]}
    assert lineage(pruned)["kept_layers"] == [1, 2, 3]
    with torch.no_grad():
        assert torch.allclose(pruned(IDS).logits, bypassed_logits(model, [0, 1, 2, 7]), atol=1e-5)
        prompt, kwargs = IDS[:1, :5], dict(max_new_tokens=6, do_sample=False, pad_token_id=2)
        assert torch.equal(pruned.generate(prompt, use_cache=True, **kwargs), pruned.generate(prompt, use_cache=False, **kwargs))
    pruned.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    again, _ = load_model(str(tmp_path), device="cpu")
    with torch.no_grad():
        assert torch.allclose(again(IDS).logits, pruned(IDS).logits, atol=1e-6)


def test_reload_refuses_a_checkpoint_that_does_not_match_its_record():
    pruned = prune_sublayers(tiny_llama(4), [0])
    fresh = type(pruned)(pruned.config)  # a full model carrying the record, as from_pretrained builds it
    with pytest.raises(ValueError, match="does not match its sub-block record"):
        restore_sublayers(fresh, missing_keys=[])  # the removed weights were not reported missing


def test_bad_ids_are_refused():
    model = tiny_llama(3)
    with pytest.raises(ValueError, match="out of range"):
        prune_sublayers(model, [6])
    with pytest.raises(ValueError, match="duplicate"):
        prune_sublayers(model, [1, 1])
    with pytest.raises(ValueError, match="keep at least one"):
        prune_sublayers(model, list(range(6)))
    with pytest.raises(TypeError):
        prune_sublayers(model, [1.0])
    once = prune_sublayers(model, [2])
    with pytest.raises(ValueError, match="already removed"):
        prune_sublayers(once, [2])
    assert np.array_equal(removal_mask([2], 3, "sublayer")[1], [True, False])
