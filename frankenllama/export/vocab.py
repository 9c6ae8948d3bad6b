"""Tokenizer metadata for GGUF files, following llama.cpp's ``convert_hf_to_gguf.py`` conventions.

llama.cpp re-implements tokenizers natively, so a GGUF file carries the whole vocabulary as
metadata: ``tokenizer.ggml.model`` (``"gpt2"`` for byte-level BPE), ``tokenizer.ggml.tokens`` and
``token_type`` (one entry per id up to ``vocab_size``; unused ids become ``[PAD<i>]``), the merges,
the special-token ids, ``add_bos_token`` and the chat template (``gguf.SpecialVocab`` writes the
last three, as the conversion script does). The pre-tokenizer (the regex split applied before BPE)
cannot be read from ``tokenizer.json`` reliably, so llama.cpp identifies it by a fingerprint:
the SHA-256 of the token ids of a fixed probe text (``get_vocab_base_pre`` in
``convert_hf_to_gguf.py``, llama.cpp PR #6920). We compute the same fingerprint and map the few
llama-family pre-tokenizers we know to llama.cpp's names; an unknown fingerprint is refused rather
than silently tokenised differently (pass ``pre_tokenizer=`` to choose one by hand).
"""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path

import gguf
from transformers import PreTrainedTokenizerBase

# llama.cpp's probe text for the pre-tokenizer fingerprint (convert_hf_to_gguf.py, get_vocab_base_pre)
_PROBE = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) "
    "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
    "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)

# fingerprint -> llama.cpp pre-tokenizer name (the llama-family subset of convert_hf_to_gguf.py's table)
KNOWN_PRE_TOKENIZERS: dict[str, str] = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM / SmolLM2
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral Nemo
}


def pre_tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """llama.cpp's fingerprint of a BPE pre-tokenizer: SHA-256 of ``str(tokenizer.encode(probe))``."""
    return sha256(str(tokenizer.encode(_PROBE)).encode()).hexdigest()


def detect_pre_tokenizer(tokenizer: PreTrainedTokenizerBase) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer, or ``ValueError`` if it is not one we know."""
    digest = pre_tokenizer_fingerprint(tokenizer)
    if digest not in KNOWN_PRE_TOKENIZERS:
        raise ValueError(
            f"unknown BPE pre-tokenizer (llama.cpp fingerprint {digest[:12]}…): llama.cpp would tokenise text "
            f"differently; pass pre_tokenizer= one of llama.cpp's names (known here: "
            f"{sorted(set(KNOWN_PRE_TOKENIZERS.values()))}), or convert with llama.cpp's convert_hf_to_gguf.py"
        )
    return KNOWN_PRE_TOKENIZERS[digest]


def _is_bpe(folder: Path) -> bool:
    path = folder / "tokenizer.json"
    if not path.is_file():
        return False
    return json.loads(path.read_text()).get("model", {}).get("type") == "BPE"


def vocab_entries(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens and llama.cpp token types for ids ``0 … vocab_size − 1`` (``get_vocab_base`` conventions).

    Added tokens are CONTROL when special, USER_DEFINED otherwise; ids without a token become
    ``[PAD<i>]`` of type UNUSED, so the list length equals the embedding's row count.
    """
    reverse = {i: tok for tok, i in tokenizer.get_vocab().items()}
    if max(reverse) >= vocab_size:
        raise ValueError(f"the tokenizer has ids up to {max(reverse)} but the model only {vocab_size} embeddings")
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if token in added:
            special = decoder[i].special if i in decoder else True
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, types


def adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer prepends its BOS token when encoding (llama.cpp's ``add_bos_token``)."""
    ids = tokenizer("a")["input_ids"]
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


def check_tokenizer(folder: Path, tokenizer: PreTrainedTokenizerBase, pre_tokenizer: str | None = None) -> str:
    """The llama.cpp pre-tokenizer name to write, refusing tokenizers this exporter cannot describe.

    SentencePiece tokenizers (Llama 2, Mistral v0.1) are refused: their scores and byte-fallback
    tokens need llama.cpp's own conversion script.
    """
    if not _is_bpe(folder):
        raise ValueError(
            f"{folder} has no byte-level BPE tokenizer.json: only BPE tokenizers (SmolLM, Llama 3, …) are "
            "exported here; convert SentencePiece models with llama.cpp's convert_hf_to_gguf.py"
        )
    return pre_tokenizer or detect_pre_tokenizer(tokenizer)


def add_vocab(writer: gguf.GGUFWriter, folder: Path, tokenizer: PreTrainedTokenizerBase, vocab_size: int, pre: str) -> None:
    """Write the ``tokenizer.ggml.*`` and ``tokenizer.chat_template`` keys for a byte-level BPE tokenizer."""
    tokens, types = vocab_entries(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    # what transformers does, not what a config claims: the data pipeline prepends BOS only if the tokenizer does
    special.add_special_token["bos"] = adds_bos(tokenizer)
    special.add_to_gguf(writer, quiet=True)
