"""Zero-shot multiple-choice evaluation by log-likelihood of the choices.

Method (the "cloze" formulation of lm-evaluation-harness, Gao et al. 2021, and lighteval): each item
(a ``frankenllama.eval.tasks.Doc``) is a context and ``n`` candidate continuations; the model's
score of a choice is the summed log-probability of its continuation tokens given the context,
``ll_i = Σ_t log p(c_i,t | context, c_i,<t)``. Two accuracies are reported:

* ``acc`` — the choice with the highest ``ll_i`` is the prediction;
* ``acc_norm`` — the highest ``ll_i / len(choice_i)``, the log-likelihood normalised by the choice's
  length in *characters* (lighteval's ``LogProbCharNorm``), which removes the bias towards short
  answers. ``len`` counts the choice as stored, with its leading space; lm-eval-harness's
  ``acc_norm`` divides by the length *without* the target delimiter (one character less), which
  decides a close item differently now and then (1 of 150 items in ``bench/lmeval_agreement.py``).

Tokenization at the boundary follows lm-eval-harness: trailing whitespace of the context is moved to
the front of the continuation, ``context + continuation`` is encoded whole, and the continuation's
tokens are the whole encoding minus the first ``len(encode(context))`` tokens.

Batching: a context is encoded and run **once** for all of its choices. Each item becomes one packed
row ``[context | choice_1[:-1] | choice_2[:-1] | …]``; a 4-D attention mask lets every choice segment
see the context and itself only, and position ids restart after the context for each segment, so
one forward pass gives exactly the log-probabilities of separate ``context + choice`` passes
(the first token of every choice is predicted from the context's last position). Rows are sorted by
length and padded into batches; logits are computed only at the scored positions. The token prefix
that every context shares (with the chat template: the system turn and the start of the user turn,
about a quarter of SmolLM2's tokens on ARC-Easy, PIQA and HellaSwag) is run once; its keys and values
are handed to every batch as a cache that all rows attend to, and the rows hold the rest (scoring
1.12x faster on those tasks, ``bench/zero_shot_prefix.py``: the long rows, which set each batch's width, gain least).

With ``chat_template=True`` the context is wrapped as a single user turn
(``apply_chat_template(..., add_generation_prompt=True)``) and the choices are scored as the start
of the assistant's reply, as lighteval does with ``--use-chat-template``.

Per-item continuous scores (``ItemScore``, in ``TaskResult.items``), which separate models with far
fewer items than 0/1 accuracy (OLMES, Gu et al. 2024, arXiv:2406.08446; DataDecide, Magnusson et
al. 2025, arXiv:2504.11393):

* ``gold_bpb`` — bits per byte of the correct continuation,
  ``−ll_gold / ln 2 / bytes(continuation_gold)``, where the continuation is the text actually scored
  (the choice plus any whitespace moved from the context, see ``encode_pair``) and ``bytes`` its
  UTF-8 length (lm-eval-harness's ``bits_per_byte``, here of the gold answer only);
* ``gold_prob`` — the gold choice's probability normalised over the choices,
  ``softmax_i(ll_i)[gold]``; ``gold_prob_norm`` the same over the per-character normalised scores
  ``ll_i / len(choice_i)`` that ``acc_norm`` ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import DynamicCache, PreTrainedTokenizerBase

from frankenllama.eval.tasks import (
    DEFAULT_TASKS, TASKS, Doc, EmptyTaskError, TaskFormatError, check_task_name, load_task, subsample_indices,
)  # fmt: skip
from frankenllama.loss import next_token_nll


class ChatTemplateError(ValueError):
    """A chat template was requested but the tokenizer has none."""


def apply_chat(tokenizer: PreTrainedTokenizerBase, text: str) -> str:
    """``text`` as one user turn followed by the assistant's generation prompt (lighteval's chat format)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"chat_template=True but the tokenizer {type(tokenizer).__name__} "
            f"({getattr(tokenizer, 'name_or_path', '?')}) has no chat template; use chat_template=False "
            "or load a tokenizer that defines one"
        )
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def move_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """lm-eval-harness's boundary rule: trailing whitespace of the context moves to the continuation."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    return context, continuation


def doc_pairs(tokenizer: PreTrainedTokenizerBase, doc: Doc, chat_template: bool) -> list[tuple[str, str]]:
    """``(context, continuation)`` of every choice as scored: the context wrapped in the chat template if asked."""
    if not chat_template:
        return doc.pairs()
    return [(apply_chat(tokenizer, context), continuation) for context, continuation in doc.pairs()]


def encode_pair(
    tokenizer: PreTrainedTokenizerBase, context: str, continuation: str, add_special_tokens: bool = True
) -> tuple[list[int], list[int]]:
    """Token ids of ``(context, continuation)`` split as lm-eval-harness does.

    Trailing whitespace of the context moves to the continuation; ``context + continuation`` is
    encoded whole and the continuation is what follows the separately encoded context.
    """
    context, continuation = move_whitespace(context, continuation)
    whole = tokenizer(context + continuation, add_special_tokens=add_special_tokens).input_ids
    ctx = tokenizer(context, add_special_tokens=add_special_tokens).input_ids
    cont = whole[len(ctx) :]
    if not cont:
        raise TaskFormatError(f"continuation {continuation!r} encodes to no tokens after context {context[-40:]!r}")
    if not ctx:  # nothing to condition on: start from a prefix token, as lm-eval does
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        ctx = [prefix]
    return ctx, cont


@dataclass(frozen=True)
class _Unit:
    """One packed row: a context and the continuations that share it."""

    context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]
    keys: tuple[tuple[int, int], ...]  # (doc index, choice index) of each continuation

    @property
    def length(self) -> int:
        return len(self.context) + sum(len(c) - 1 for c in self.continuations)


def _units(
    tokenizer: PreTrainedTokenizerBase, docs: Sequence[Doc], chat_template: bool, max_length: int | None
) -> list[_Unit]:
    units = []
    for d, doc in enumerate(docs):
        groups: dict[tuple[int, ...], list[tuple[tuple[int, ...], tuple[int, int]]]] = {}
        for c, (context, continuation) in enumerate(doc_pairs(tokenizer, doc, chat_template)):
            ctx, cont = encode_pair(tokenizer, context, continuation, add_special_tokens=not chat_template)
            groups.setdefault(tuple(ctx), []).append((tuple(cont), (d, c)))
        for ctx, members in groups.items():
            conts = tuple(m[0] for m in members)
            if max_length is not None:
                budget = max_length - sum(len(c) - 1 for c in conts)
                if budget < 1:
                    raise TaskFormatError(f"item {d}: its choices alone exceed the model's context of {max_length} tokens")
                ctx = ctx[-budget:]  # keep the end of an over-long context, as lm-eval does
            units.append(_Unit(ctx, conts, tuple(m[1] for m in members)))
    return units


def _shared_prefix(units: Sequence[_Unit]) -> tuple[int, ...]:
    """The longest token prefix of every unit's context that leaves each context at least one token.

    (The first token of a choice is predicted at its context's last position, which must be in the row.)
    """
    contexts = [u.context for u in units]
    if not contexts:
        return ()
    n = min(len(c) for c in contexts) - 1
    first = contexts[0]
    for c in contexts[1:]:
        n = next((i for i in range(n) if c[i] != first[i]), n)
    return tuple(first[: max(n, 0)])


def _prefix_cache(decoder: nn.Module, prefix: tuple[int, ...], device: torch.device) -> list[tuple[torch.Tensor | None, ...]]:
    """Keys and values of every block on the shared ``prefix`` (one sequence); ``(None, None)`` for a block
    without attention (``frankenllama.sublayer``)."""
    cache = decoder(input_ids=torch.tensor([prefix], device=device), cache=DynamicCache(), use_cache=True).cache
    return [(k, v) for k, v, *_ in cache]


def _batch_cache(prefix_kv: list[tuple[torch.Tensor | None, ...]], n: int) -> DynamicCache:
    """A fresh cache holding the prefix for ``n`` rows (a forward pass appends to the cache it is given)."""
    return DynamicCache(ddp_cache_data=[(None, None) if k is None else (k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1))
                                        for k, v in prefix_kv])


def _pack(units: Sequence[_Unit], pad_id: int, dtype: torch.dtype, offset: int = 0) -> tuple[torch.Tensor, ...]:
    """Input ids, position ids, additive 4-D mask and scored (row, position, target, slot) of a batch.

    ``offset``: tokens of a shared prefix that precede every row in the cache (positions start after it;
    the mask's first ``offset`` key columns, the prefix, are visible to every position).
    """
    width = max(u.length for u in units)
    n = len(units)
    ids = torch.full((n, width), pad_id, dtype=torch.long)  # (B, L)
    pos = torch.zeros((n, width), dtype=torch.long)  # (B, L)
    seg = torch.full((n, width), -1, dtype=torch.long)  # (B, L): 0 context, j+1 choice j, -1 padding
    rows, cols, targets, slots = [], [], [], []
    slot = 0
    for b, unit in enumerate(units):
        tc = len(unit.context)
        ids[b, :tc] = torch.tensor(unit.context)
        pos[b, :tc] = torch.arange(tc)
        seg[b, :tc] = 0
        start = tc
        for j, cont in enumerate(unit.continuations):
            body = cont[:-1]  # the last token is only ever a target
            ids[b, start : start + len(body)] = torch.tensor(body, dtype=torch.long)
            pos[b, start : start + len(body)] = torch.arange(tc, tc + len(body))
            seg[b, start : start + len(body)] = j + 1
            # token t of the choice is predicted at the context's last position (t = 0) or at body[t-1]
            rows += [b] * len(cont)
            cols += [tc - 1] + list(range(start, start + len(body)))
            targets += list(cont)
            slots += [slot] * len(cont)
            start += len(body)
            slot += 1
        pos[b, start:] = torch.arange(width - start)  # padding: any valid position
    q = torch.arange(width)
    causal = q[None, :] <= q[:, None]  # (L, L) key <= query
    seg_q, seg_k = seg[:, :, None], seg[:, None, :]  # (B, L, 1), (B, 1, L)
    allowed = causal & (((seg_k == 0) & (seg_q >= 0)) | (seg_k == seg_q))  # (B, L, L)
    allowed |= torch.eye(width, dtype=torch.bool)  # padding rows attend to themselves (no empty softmax)
    mask = torch.zeros((n, 1, width, offset + width), dtype=dtype)  # the prefix's columns stay 0: visible
    mask[..., offset:].masked_fill_(~allowed[:, None], torch.finfo(dtype).min)  # (B, 1, L, P + L)
    return ids, pos + offset, mask, torch.tensor(rows), torch.tensor(cols), torch.tensor(targets), torch.tensor(slots)


def _batches(units: Sequence[_Unit], batch_size: int, max_batch_tokens: int) -> Iterable[list[_Unit]]:
    """Longest first (an out-of-memory shows up at once), each batch within both budgets."""
    order = sorted(units, key=lambda u: -u.length)
    batch: list[_Unit] = []
    for unit in order:
        width = batch[0].length if batch else unit.length
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * width > max_batch_tokens):
            yield batch
            batch = []
        batch.append(unit)
    if batch:
        yield batch


@torch.inference_mode()
def score_docs(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    docs: Sequence[Doc],
    chat_template: bool = False,
    batch_size: int = 16,
    max_batch_tokens: int = 4096,
    progress: bool = False,
    share_prefix: bool = True,
) -> list[list[float]]:
    """Summed log-likelihood (nats) of every choice of every item: ``out[item][choice]``.

    See the module docstring for the packing scheme; the result equals scoring each
    ``context + choice`` in its own forward pass, up to float rounding. ``share_prefix=False`` runs
    the contexts' common prefix in every row (for comparison: ``bench/zero_shot_prefix.py``).
    """
    if chat_template:
        apply_chat(tokenizer, "")  # fail before any work when there is no template
    if batch_size < 1 or max_batch_tokens < 1:
        raise ValueError(f"batch_size and max_batch_tokens must be positive, got {batch_size}, {max_batch_tokens}")
    max_length = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    units = _units(tokenizer, docs, chat_template, max_length)
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    device = head.weight.device
    dtype = next(model.parameters()).dtype
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = [[math.nan] * len(doc.choices) for doc in docs]
    prefix = _shared_prefix(units) if share_prefix else ()
    if prefix:  # run once; each row keeps its own part of the context
        units = [replace(u, context=u.context[len(prefix) :]) for u in units]
        prefix_kv = _prefix_cache(decoder, prefix, device)
    total = sum(1 for _ in _batches(units, batch_size, max_batch_tokens))
    for batch in tqdm(_batches(units, batch_size, max_batch_tokens), total=total, desc="scoring", disable=not progress, leave=False):
        ids, pos, mask, rows, cols, targets, slots = _pack(batch, pad_id, dtype, offset=len(prefix))
        cache = _batch_cache(prefix_kv, len(batch)) if prefix else None
        hidden = decoder(
            input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device), cache=cache,
            use_cache=False,
        ).last_hidden_state  # (B, L, H)
        logits = head(hidden[rows.to(device), cols.to(device)]).float()  # (P, V) scored positions only
        # next_token_nll scores ids[1:]: one leading placeholder makes the targets those ids
        logp = -next_token_nll(logits, F.pad(targets, (1, 0)), shifted=True).cpu()  # (P,)
        sums = torch.zeros(int(slots.max()) + 1, dtype=torch.float64).index_add_(0, slots, logp.double())
        keys = [key for unit in batch for key in unit.keys]
        for (d, c), value in zip(keys, sums.tolist()):
            out[d][c] = value
    return out


# --------------------------------------------------------------------------------------------------
# evaluation


@dataclass(frozen=True)
class TaskEvalConfig:
    """What ``evaluate_tasks`` runs; validated on construction.

    Attributes:
        tasks: registry names (``TASKS``) or paths of JSONL task files.
        limit: at most this many items per task, drawn with ``seed`` (``None``: all items).
        seed: seed of the item sample.
        chat_template: wrap each context as a user turn of the tokenizer's chat template.
        batch_size: packed rows per forward pass.
        max_batch_tokens: padded tokens per forward pass (bounds memory).
    """

    tasks: tuple[str, ...] = DEFAULT_TASKS
    limit: int | None = None
    seed: int = 0
    chat_template: bool = False
    batch_size: int = 16
    max_batch_tokens: int = 4096

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):
            object.__setattr__(self, "tasks", (self.tasks,))
        object.__setattr__(self, "tasks", tuple(str(t) for t in self.tasks))
        if not self.tasks:
            raise ValueError("no tasks given; name at least one of " + str(sorted(TASKS)))
        for name in self.tasks:
            check_task_name(name)
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit <= 0):
            raise ValueError(f"limit must be a positive number of items or None (all items), got {self.limit!r}")
        if self.batch_size < 1 or self.max_batch_tokens < 1:
            raise ValueError("batch_size and max_batch_tokens must be positive")


@dataclass(frozen=True)
class ItemScore:
    """One item's scores (see the module docstring); ``item`` is its index in the task's full item list."""

    item: int
    acc: int  # 1 if the highest-likelihood choice is the gold one
    acc_norm: int  # 1 if the highest per-character likelihood choice is the gold one
    gold_bpb: float  # bits per UTF-8 byte of the scored gold continuation
    gold_prob: float  # softmax over the choices' summed log-likelihoods, at the gold choice
    gold_prob_norm: float  # softmax over the per-character log-likelihoods, at the gold choice


@dataclass(frozen=True)
class TaskResult:
    """Accuracy of one task; ``*_stderr`` is the binomial standard error ``sqrt(p(1-p)/(n-1))``.

    ``items`` holds the per-item scores (``ItemScore``) when ``evaluate_tasks`` produced the result.
    """

    task: str
    n: int
    acc: float
    acc_norm: float
    acc_stderr: float
    acc_norm_stderr: float
    chance: float  # mean of 1/len(choices): the accuracy of guessing
    items: tuple[ItemScore, ...] = field(default=(), repr=False, compare=False)


def _stderr(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else math.nan


def _norm_scores(doc: Doc, ll: Sequence[float]) -> list[float]:
    """``ll_i / len(choice_i)``: the log-likelihood per character that ``acc_norm`` ranks."""
    return [ll[i] / max(len(doc.choices[i]), 1) for i in range(len(ll))]


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])  # the first of tied maxima


def _gold_softmax(values: Sequence[float], gold: int) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(np.exp(v[gold] - np.logaddexp.reduce(v)))


def item_scores(
    docs: Sequence[Doc], scores: Sequence[Sequence[float]], gold_bytes: Sequence[int], ids: Sequence[int]
) -> list[ItemScore]:
    """Per-item ``ItemScore`` of scored items; ``gold_bytes`` is the UTF-8 length of each gold continuation."""
    out = []
    for doc, ll, nbytes, i in zip(docs, scores, gold_bytes, ids, strict=True):
        norm = _norm_scores(doc, ll)
        out.append(ItemScore(
            int(i), int(_argmax(ll) == doc.gold), int(_argmax(norm) == doc.gold),
            -ll[doc.gold] / math.log(2) / nbytes, _gold_softmax(ll, doc.gold), _gold_softmax(norm, doc.gold),
        ))  # fmt: skip
    return out


def gold_continuation_bytes(tokenizer: PreTrainedTokenizerBase, doc: Doc, chat_template: bool) -> int:
    """UTF-8 bytes of the gold continuation as scored (with the whitespace moved from its context)."""
    context, continuation = doc_pairs(tokenizer, doc, chat_template)[doc.gold]
    return len(move_whitespace(context, continuation)[1].encode("utf-8"))


def accuracy(docs: Sequence[Doc], scores: Sequence[Sequence[float]], task: str = "") -> TaskResult:
    """``acc`` and ``acc_norm`` (log-likelihood per character of the choice) of scored items."""
    if not docs:
        raise EmptyTaskError(f"task {task!r} has no items to score")
    hits = hits_norm = 0
    for doc, ll in zip(docs, scores):
        hits += _argmax(ll) == doc.gold
        hits_norm += _argmax(_norm_scores(doc, ll)) == doc.gold
    n = len(docs)
    acc, acc_norm = hits / n, hits_norm / n
    chance = sum(1 / len(d.choices) for d in docs) / n
    return TaskResult(task, n, acc, acc_norm, _stderr(acc, n), _stderr(acc_norm, n), chance)


def evaluate_tasks(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[str] | str = DEFAULT_TASKS,
    limit: int | None = None,
    seed: int = 0,
    chat_template: bool = False,
    batch_size: int = 16,
    max_batch_tokens: int = 4096,
    progress: bool = False,
) -> dict[str, TaskResult]:
    """Zero-shot accuracy (``acc``, ``acc_norm``) of ``model`` on each task, keyed by task name.

    ``tasks`` are registry names or JSONL paths; ``limit`` items per task are drawn with ``seed``.
    Each ``TaskResult.items`` holds the per-item ``ItemScore`` records (item id, acc, acc_norm,
    gold_bpb, gold_prob, gold_prob_norm), the input of ``frankenllama.eval.paired``.
    """
    config = TaskEvalConfig(tuple([tasks] if isinstance(tasks, str) else tasks), limit, seed, chat_template, batch_size, max_batch_tokens)
    if config.chat_template:
        apply_chat(tokenizer, "")
    was_training = model.training
    model.eval()
    results = {}
    try:
        for name in config.tasks:
            task = load_task(name)
            ids = subsample_indices(len(task.docs), config.limit, config.seed)
            docs = [task.docs[i] for i in ids]
            scores = score_docs(
                model, tokenizer, docs, config.chat_template, config.batch_size, config.max_batch_tokens, progress
            )
            nbytes = [gold_continuation_bytes(tokenizer, doc, config.chat_template) for doc in docs]
            items = tuple(item_scores(docs, scores, nbytes, ids))
            results[task.name] = replace(accuracy(docs, scores, task.name), items=items)
    finally:
        model.train(was_training)
    return results
