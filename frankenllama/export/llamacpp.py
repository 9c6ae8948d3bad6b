"""Running exported GGUF files in llama.cpp (through the ``llama_cpp`` Python bindings).

What the deployment checks and the trade-off study ask of llama.cpp: the logits of every position of
token blocks (``logits_all=True``), greedy continuations, and held-out perplexity computed from those
logits with the workbook's own ``next_token_nll`` (so llama.cpp and transformers are scored by the
same code). Each block is evaluated from an empty KV cache, like ``frankenllama.eval.perplexity`` scores
blocks independently. ``llama_cpp`` is imported only when a function runs; ``available()`` says
whether it is installed (``pip install llama-cpp-python==0.3.36`` builds llama.cpp from source).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from frankenllama.loss import next_token_nll

GGML_TYPE_F32 = 0  # ggml_type of a float32 KV cache (llama.cpp's default cache is F16)


def available() -> bool:
    """Whether the ``llama_cpp`` bindings are importable."""
    return importlib.util.find_spec("llama_cpp") is not None


def open_gguf(path: str | Path, n_ctx: int = 512, n_threads: int | None = None, f32_cache: bool = False,
              logits_all: bool = True) -> Any:
    """A ``llama_cpp.Llama`` on ``path`` (CPU, quiet); ``f32_cache`` keeps K and V in float32 for exact checks."""
    from llama_cpp import Llama

    kwargs: dict[str, Any] = {}
    if f32_cache:
        kwargs.update(type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
    threads = n_threads or max(1, min(os.cpu_count() or 1, torch.get_num_threads()))
    return Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=threads,
                 n_threads_batch=threads, logits_all=logits_all, verbose=False, **kwargs)


def block_logits(llm: Any, input_ids: torch.Tensor) -> np.ndarray:
    """llama.cpp's logits of every position of every block: ``(N, T)`` ids → ``(N, T, V)`` float32."""
    out = []
    for row in input_ids.tolist():  # (T,)
        llm.reset()
        llm.eval(row)
        out.append(np.array(llm.scores[: len(row)], dtype=np.float32))  # (T, V)
    return np.stack(out)


def nll_from_logits(logits: np.ndarray | torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-position next-token NLL (nats) of ``(N, T, V)`` logits for ``(N, T)`` blocks: ``(N, T-1)``."""
    return next_token_nll(torch.as_tensor(logits), input_ids)


def perplexity_from_logits(logits: np.ndarray | torch.Tensor, input_ids: torch.Tensor) -> float:
    """Token-weighted perplexity, every position but the first of each block predicted."""
    return float(nll_from_logits(logits, input_ids).mean().exp())


def greedy(llm: Any, prompt: list[int], n_new: int) -> list[int]:
    """Greedy continuation of ``prompt`` by arg-max of llama.cpp's logits (no sampler, no EOS stop)."""
    llm.reset()
    llm.eval(prompt)
    tokens: list[int] = []
    for _ in range(n_new):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        tokens.append(nxt)
        llm.eval([nxt])
    return tokens


@torch.no_grad()
def reference_greedy(model: torch.nn.Module, prompt: list[int], n_new: int) -> list[int]:
    """The same greedy continuation by a transformers model (full recompute each step, no cache, no EOS stop)."""
    ids = torch.tensor([prompt])  # (1, T)
    for _ in range(n_new):
        nxt = model(ids).logits[0, -1].argmax()
        ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    return ids[0, len(prompt):].tolist()


@torch.no_grad()
def reference_logits(model: torch.nn.Module, input_ids: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
    """A transformers model's float32 logits of ``(N, T)`` blocks: ``(N, T, V)``."""
    return torch.cat([model(input_ids[i:i + batch_size]).logits.float() for i in range(0, len(input_ids), batch_size)])


def agreement(reference: torch.Tensor, candidate: np.ndarray | torch.Tensor) -> dict[str, float]:
    """How closely ``candidate`` logits follow ``reference`` ``(N, T, V)``: max |Δ| (absolute and relative
    to max |reference|), top-1 agreement, and mean KL(reference ‖ candidate) per position in nats."""
    cand = torch.as_tensor(candidate, dtype=torch.float32)
    ref = reference.float()
    diff = (cand - ref).abs().max().item()
    scale = ref.abs().max().item()
    logp, logq = ref.log_softmax(-1), cand.log_softmax(-1)
    kl = (logp.exp() * (logp - logq)).sum(-1).mean().item()
    top1 = (cand.argmax(-1) == ref.argmax(-1)).float().mean().item()
    return {"max_abs_diff": diff, "max_abs_ref": scale, "ratio": diff / scale, "top1": top1, "kl": kl}
