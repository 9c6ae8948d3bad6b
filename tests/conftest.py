"""Shared fixtures: tiny in-process llama models for unit tests, the real SmolLM2 for integration tests."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tiny_llama(num_layers: int = 4, seed: int = 0, **overrides) -> LlamaForCausalLM:
    """A random 'pico' llama (vocab 128, hidden 32) built in process, in eval mode."""
    kwargs = dict(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**kwargs))
    return model.eval()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over a small closed vocabulary (ids < 128)."""
    words = "the a of and to in is was on for by with as at from it that this an be".split()
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )


@pytest.fixture
def tiny_model() -> LlamaForCausalLM:
    return tiny_llama()


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M (fp32, CPU) and its tokenizer, loaded once per test session."""
    from frankenllama import load_model

    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def eval_blocks(smollm2):
    """8 held-out eval blocks of 128 tokens of wiki-leads."""
    from frankenllama.data import load_corpus, token_blocks

    _, tokenizer = smollm2
    return token_blocks(tokenizer, load_corpus("wiki-leads", "eval"), 128, max_blocks=8)


# The smoke profile (notebook tests, the browser suite) saves every healed model it makes as a full
# fp32 variant under data/cache/variants (about 0.5 GB each, 19 of them): removed after each test
# module, so that `make test` neither fills a small disk (it failed CI once) nor leaves gigabytes behind.
SMOKE_VARIANT_PREFIXES = ("smoke-", "deploy-smoke")


def remove_smoke_variants() -> list[str]:
    """Delete the smoke profile's saved variants (and their checkpoints or unfinished temporary folders)."""
    from frankenllama import paths

    removed = []
    if paths.VARIANTS_DIR.is_dir():
        for path in paths.VARIANTS_DIR.iterdir():
            if path.is_dir() and path.name.lstrip(".").startswith(SMOKE_VARIANT_PREFIXES):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
    return removed


@pytest.fixture(scope="module", autouse=True)
def _no_smoke_variants_left():
    yield
    remove_smoke_variants()


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Each test starts with the session's torch thread count: the fault scenarios pin one thread in
    process, and a test that compares logits with a fresh process (which uses the default count) must not
    inherit that (1 against 2 threads moves SmolLM2's logits by ~6e-5 on an AVX-512 machine)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
