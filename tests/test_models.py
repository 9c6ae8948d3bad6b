"""load_model: registry, folders, GGUF files, and what it refuses."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama, tiny_tokenizer
from transformers import GPT2Config, GPT2LMHeadModel

from frankenllama import load_model
from frankenllama.models import UnsupportedModelError, _gguf_cache_folder, decoder_layers


def test_local_folder(tmp_path):
    model = tiny_llama()
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    loaded, tok = load_model(tmp_path, device="cpu")
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    assert not loaded.training and tok.pad_token_id is not None


def test_non_llama_is_refused(tmp_path):
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=128)).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="model.model.layers"):
        load_model(tmp_path, device="cpu")
    with pytest.raises(UnsupportedModelError):
        decoder_layers(torch.nn.Linear(2, 2))


def test_unknown_name_and_missing_paths(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'smollm-9000'.*smollm2-135m"):
        load_model("smollm-9000")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing.gguf")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path)


def test_corrupt_gguf_writes_nothing(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ValueError, match="could not read GGUF"):
        load_model(bad)
    assert not _gguf_cache_folder(bad).exists()


def test_unknown_dtype(tmp_path):
    tiny_llama().save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model(tmp_path, dtype="float7", device="cpu")


@pytest.mark.integration
def test_registry_model(smollm2, tmp_path):
    model, tokenizer = smollm2
    assert type(model).__name__ == "LlamaForCausalLM" and len(decoder_layers(model)) == 30
    assert getattr(model, "hf_quantizer", None) is None and getattr(model.config, "quantization_config", None) is None
    assert model.dtype == torch.float32 and tokenizer.chat_template
    model.save_pretrained(tmp_path)  # the GGUF marker would block this


def test_sub_block_pruned_folder_loads_through_load_model(tmp_path):
    from frankenllama.sublayer import prune_sublayers

    pruned = prune_sublayers(tiny_llama(), [1, 4])  # MLP of block 0, attention of block 2
    pruned.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    loaded, _ = load_model(tmp_path, device="cpu")
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, pruned(ids).logits)
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in pruned.parameters())
