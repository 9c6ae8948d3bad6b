"""A pico llama and a character-level tokenizer built in process (no downloads), for unit tests."""

from __future__ import annotations

import string

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

import conftest

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
SPECIALS = ("<unk>", "<pad>", "<eos>")
CHARS = string.ascii_letters + string.digits + " .,:;?!'\"\n_-<>/()[]"


def char_tokenizer(chat_template: bool = True) -> PreTrainedTokenizerFast:
    """One token per character (a BPE without merges); ids 0–2 are <unk>, <pad>, <eos>."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({c: i + len(SPECIALS) for i, c in enumerate(CHARS)})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_llama(num_layers: int = 2, seed: int = 0) -> LlamaForCausalLM:
    """conftest's pico llama sized for the character tokenizer, with larger random weights."""
    model = conftest.tiny_llama(num_layers, seed, vocab_size=96, max_position_embeddings=256,
                                pad_token_id=1, eos_token_id=2, bos_token_id=None)
    with torch.no_grad():  # larger than the default init so that choices get clearly different scores
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return model


WORDS = "the a of and to in is was on for by with as at from it that this an be".split()


def pico_workbook(tmp_path, monkeypatch, num_layers: int, n_docs: int):
    """A saved pico llama, a word corpus of ``n_docs`` documents, and the cache and variant store in ``tmp_path``.

    Returns ``(model folder, corpus file, rng)``; the seeded ``rng`` continues after drawing the corpus.
    """
    import random

    from frankenllama import paths

    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(paths, "VARIANTS_DIR", tmp_path / "cache" / "variants")
    folder = tmp_path / "pico"
    tiny_llama(num_layers=num_layers).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    rng = random.Random(0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(rng.choice(WORDS) for _ in range(30)) for _ in range(n_docs)))
    return folder, corpus, rng
