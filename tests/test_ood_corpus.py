"""The eval-only out-of-domain corpus "olmo-passages" (frankenllama.data)."""

from __future__ import annotations

import pytest

from frankenllama.data import EVAL_ONLY_CORPORA, load_corpus


@pytest.fixture(scope="module")
def splits():
    return {s: load_corpus("olmo-passages", s, allow_eval_only=True) for s in ("calib", "train", "eval", "all")}


def test_loads_thousands_of_documents_with_disjoint_stable_splits(splits):
    total = splits["all"]
    assert len(total) > 20_000  # 10,042 HellaSwag contexts + 14,042 MMLU questions + 887 SciQ supports, deduplicated
    parts = [set(splits[s]) for s in ("calib", "train", "eval")]
    assert sum(len(p) for p in parts) == len(total) == len(set(total))  # a partition, no duplicates
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert 0.07 < len(splits["eval"]) / len(total) < 0.13  # buckets 0-9 of 100
    assert len(splits["eval"]) > 2000
    assert load_corpus("olmo-passages", "eval") == splits["eval"]  # stable order and content


def test_holds_every_source_and_no_wikipedia_corpus_text(splits):
    docs = set(splits["all"])
    assert any(d.startswith("Find the degree for the given field extension") for d in docs)  # MMLU
    assert any(d.startswith("A frameshift mutation is a deletion or insertion") for d in docs)  # SciQ
    assert any(d.startswith("A man is sitting on a roof. he") for d in docs)  # HellaSwag (ActivityNet)
    assert not any("[title]" in d or "[header]" in d for d in docs)  # WikiHow artefacts cleaned
    assert not docs & set(load_corpus("wiki-leads", "all"))


def test_only_the_eval_split_is_loadable_by_default():
    assert "olmo-passages" in EVAL_ONLY_CORPORA
    for split in ("calib", "train", "all"):
        with pytest.raises(ValueError, match="eval-only"):
            load_corpus("olmo-passages", split)


def test_order_interleaves_sources(splits):
    """Keys are text hashes, so the first documents (the first perplexity blocks) mix the sources."""
    first = splits["eval"][:200]
    assert sum(d.rstrip().endswith("?") for d in first) > 20  # MMLU questions
    assert sum(not d.rstrip().endswith("?") for d in first) > 20  # contexts and passages
