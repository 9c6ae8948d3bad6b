"""drop_layers: a real smaller model, equal to the original with those blocks skipped."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import tiny_llama
from transformers import Qwen2Config, Qwen2ForCausalLM

from frankenllama import drop_layers, perplexity
from frankenllama.surgery import lineage, removed_layers
from test_similarity import make_identity

PLAIN_RELOAD = textwrap.dedent(
    """
    import sys
    sys.modules["frankenllama"] = None  # prove the folder loads without frankenllama
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
    ids = torch.load(sys.argv[2])
    with torch.no_grad():
        torch.save(model(ids).logits, sys.argv[3])
    """
)


def plain_transformers_logits(folder, ids, tmp_path) -> torch.Tensor:
    torch.save(ids, tmp_path / "ids.pt")
    subprocess.run(
        [sys.executable, "-c", PLAIN_RELOAD, str(folder), str(tmp_path / "ids.pt"), str(tmp_path / "logits.pt")],
        check=True,
    )
    return torch.load(tmp_path / "logits.pt")


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(3, 128, (3, 12), generator=torch.Generator().manual_seed(0))


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_equals_original_with_blocks_skipped(tiny_model, ids):
    pruned = drop_layers(tiny_model, [1, 2])
    skipped = tiny_llama()  # same seed: same weights as tiny_model
    for layer in (1, 2):
        make_identity(skipped, layer)
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids).logits, skipped(ids).logits, atol=1e-5, rtol=0)


def test_source_untouched_and_config_updated(tiny_model, ids):
    before = state(tiny_model)
    pruned = drop_layers(tiny_model, [0, 3])
    after = tiny_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert tiny_model.config.num_hidden_layers == 4 and len(tiny_model.model.layers) == 4
    assert pruned.config.num_hidden_layers == 2 and len(pruned.model.layers) == 2
    assert [b.self_attn.layer_idx for b in pruned.model.layers] == [0, 1]
    assert [b.self_attn.layer_idx for b in tiny_model.model.layers] == [0, 1, 2, 3]
    assert pruned.lm_head.weight is pruned.model.embed_tokens.weight  # tied embeddings stay tied
    assert pruned.lm_head.weight is not tiny_model.lm_head.weight
    assert sum(p.numel() for p in pruned.parameters()) == sum(p.numel() for p in tiny_model.parameters()) - sum(
        p.numel() for i in (0, 3) for p in tiny_model.model.layers[i].parameters()
    )


def test_lineage_composes(tiny_model):
    once = drop_layers(tiny_llama(num_layers=6), [1])  # kept 0 2 3 4 5
    twice = drop_layers(once, [1, 3])  # removes original 2 and 4
    assert lineage(twice) == {"original_num_hidden_layers": 6, "kept_layers": [0, 3, 5]}
    assert removed_layers(twice) == [1, 2, 4]
    assert removed_layers(tiny_model) == []


def test_generation_with_kv_cache(tiny_model):
    pruned = drop_layers(tiny_model, [1])
    prompt = torch.tensor([[5, 6, 7, 8]])
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=2)
    with_cache = pruned.generate(prompt, use_cache=True, **kwargs)
    without = pruned.generate(prompt, use_cache=False, **kwargs)
    assert torch.equal(with_cache, without)


def test_layer_types_follow_the_blocks():
    config = Qwen2Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         layer_types=["full_attention", "sliding_attention", "full_attention", "sliding_attention"],
                         use_sliding_window=True, sliding_window=8)
    model = Qwen2ForCausalLM(config).eval()
    pruned = drop_layers(model, [0])
    assert pruned.config.layer_types == ["sliding_attention", "full_attention", "sliding_attention"]


def test_saved_model_reloads_in_plain_transformers(tiny_model, ids, tmp_path):
    pruned = drop_layers(tiny_model, [2])
    pruned.save_pretrained(tmp_path / "pruned")
    reloaded = plain_transformers_logits(tmp_path / "pruned", ids, tmp_path)
    with torch.no_grad():
        assert (reloaded - pruned(ids).logits).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "layers, error, match",
    [
        ([4], ValueError, "out of range"),
        ([-1], ValueError, "out of range"),
        ([1, 1], ValueError, "duplicate"),
        ([0, 1, 2, 3], ValueError, "all 4 layers"),
        ([1.0], TypeError, "integers"),
    ],
)
def test_bad_layer_ids(tiny_model, layers, error, match):
    before = state(tiny_model)
    with pytest.raises(error, match=match):
        drop_layers(tiny_model, layers)
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())


@pytest.mark.integration
def test_real_model_round_trip_and_curve_point(smollm2, eval_blocks, tmp_path):
    model, _ = smollm2
    pruned = drop_layers(model, [13, 14, 15])
    assert pruned.config.num_hidden_layers == 27 and model.config.num_hidden_layers == 30
    pruned.save_pretrained(tmp_path / "pruned")
    ids = eval_blocks[:2, :64]
    reloaded = plain_transformers_logits(tmp_path / "pruned", ids, tmp_path)
    with torch.no_grad():
        assert (reloaded - pruned(ids).logits).abs().max() <= 1e-5
    base, cut = perplexity(model, eval_blocks), perplexity(pruned, eval_blocks)
    assert 5 < base < 40  # SmolLM2-135M on Wikipedia leads
    assert base < cut < 10 * base
