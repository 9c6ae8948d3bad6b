"""Zero-shot scoring: the packed scorer against hand-computed log-likelihoods, JSONL tasks, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from frankenllama.eval import tasks as T
from frankenllama.eval.tasks import (
    Doc,
    EmptyTaskError,
    TaskFormatError,
    UnknownTaskError,
    load_jsonl_task,
    load_task,
    subsample,
)
from frankenllama.eval.zero_shot import (
    ChatTemplateError,
    TaskEvalConfig,
    accuracy,
    apply_chat,
    encode_pair,
    evaluate_tasks,
    score_docs,
)
from tiny_lm import char_tokenizer, tiny_llama

DOCS = [
    Doc("Question: what is it?\nAnswer:", (" a cat", " the dog", " no"), 1),
    Doc("Short", (" x", " yy"), 0),
    # per-choice contexts sharing one continuation (Winogrande-style partial scoring)
    Doc("Tom saw", (" it go.", " it go."), 1, contexts=("Tom saw Ann", "Tom saw Bob")),
]


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


def manual_loglik(model, tokenizer, context: str, continuation: str, chat: bool = False) -> float:
    """Sum of log p(continuation tokens | context) from one plain forward pass of context + continuation."""
    if chat:
        context = apply_chat(tokenizer, context)
    ctx, cont = encode_pair(tokenizer, context, continuation, add_special_tokens=not chat)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)  # (T, V)
    return sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))


@pytest.mark.parametrize("chat", [False, True])
def test_packed_scores_equal_separate_forward_passes(model, tokenizer, chat):
    scores = score_docs(model, tokenizer, DOCS, chat_template=chat, batch_size=2)
    for doc, row in zip(DOCS, scores):
        for (context, continuation), value in zip(doc.pairs(), row):
            assert value == pytest.approx(manual_loglik(model, tokenizer, context, continuation, chat), abs=1e-4)


def test_shared_prefix_runs_once_and_scores_as_separate_passes(tokenizer):
    """The chat template's common start is run once as a cache; the scores stay those of separate passes,
    also when a block has no attention (nothing cached for it) or an MLP-less one."""
    from frankenllama.eval.zero_shot import _shared_prefix, _units
    from frankenllama.sublayer import prune_sublayers

    units = _units(tokenizer, DOCS, True, None)
    prefix = _shared_prefix(units)
    assert tokenizer.decode(prefix) == "<user>" and all(len(u.context) > len(prefix) for u in units)
    assert _shared_prefix(_units(tokenizer, DOCS, False, None)) == ()  # the plain contexts share nothing
    model = prune_sublayers(tiny_llama(num_layers=3), [0, 3])  # block 0's attention, block 1's MLP
    scores = score_docs(model, tokenizer, DOCS, chat_template=True, batch_size=2)
    for doc, row in zip(DOCS, scores):
        for (context, continuation), value in zip(doc.pairs(), row):
            assert value == pytest.approx(manual_loglik(model, tokenizer, context, continuation, True), abs=1e-4)


def test_shared_prefix_keeps_a_token_of_every_context():
    from frankenllama.eval.zero_shot import _shared_prefix, _Unit

    units = [_Unit((5, 6, 7), ((1,),), ((0, 0),)), _Unit((5, 6), ((2,),), ((1, 0),))]
    assert _shared_prefix(units) == (5,)  # (5, 6) would leave the second row no context position
    assert _shared_prefix(units[:1]) == (5, 6)


def test_uniform_model_gives_hand_computed_loglik(tokenizer):
    """With zero (tied) embeddings every logit is 0, so each token costs exactly log V nats."""
    model = tiny_llama()
    with torch.no_grad():
        model.get_input_embeddings().weight.zero_()
    vocab = model.config.vocab_size
    scores = score_docs(model, tokenizer, DOCS[:2])
    for doc, row in zip(DOCS[:2], scores):
        for choice, value in zip(doc.choices, row):  # one token per character
            assert value == pytest.approx(-len(choice) * math.log(vocab), abs=1e-4)


def test_scores_do_not_depend_on_batching(model, tokenizer):
    one = score_docs(model, tokenizer, DOCS, batch_size=1)
    many = score_docs(model, tokenizer, DOCS, batch_size=16, max_batch_tokens=64)
    assert sum(many, []) == pytest.approx(sum(one, []), abs=1e-4)


def test_encode_pair_moves_trailing_space_to_continuation(tokenizer):
    ctx, cont = encode_pair(tokenizer, "ab ", "c")
    assert tokenizer.decode(ctx) == "ab"
    assert tokenizer.decode(cont) == " c"


def test_accuracy_and_length_normalised_accuracy():
    docs = [Doc("q", (" a", " bbbbbb"), 1)]
    # acc picks the higher total (-4 > -6); acc_norm compares -4/2 = -2 with -6/7 ≈ -0.86
    result = accuracy(docs, [[-4.0, -6.0]], "hand")
    assert (result.acc, result.acc_norm, result.chance) == (0.0, 1.0, 0.5)


def test_evaluate_jsonl_task(model, tokenizer, tmp_path):
    path = tmp_path / "mine.jsonl"
    lines = [{"query": "Q: 1+1?\nA:", "choices": [" 2", " 3"], "gold": 0}, {"query": "Sky is", "choices": [" blue", " red", " x"], "gold": 0}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    results = evaluate_tasks(model, tokenizer, [str(path)], chat_template=True)
    result = results["mine"]
    assert result.n == 2 and 0.0 <= result.acc <= 1.0 and 0.0 <= result.acc_norm <= 1.0
    assert result.chance == pytest.approx((1 / 2 + 1 / 3) / 2)
    task = load_jsonl_task(path)
    assert task.docs[1] == Doc("Sky is", (" blue", " red", " x"), 0)


def test_evaluate_respects_limit_and_restores_mode(model, tokenizer, tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(json.dumps({"query": f"q{i}", "choices": [" a", " b"], "gold": i % 2}) for i in range(10)))
    model.train()
    assert evaluate_tasks(model, tokenizer, str(path), limit=3)["many"].n == 3
    assert model.training
    model.eval()


def test_subsample_is_seeded_and_keeps_order():
    docs = [Doc(f"q{i}", (" a", " b"), 0) for i in range(50)]
    a, b = subsample(docs, 10, seed=1), subsample(docs, 10, seed=1)
    assert a == b and len(a) == 10 and a != subsample(docs, 10, seed=2)
    assert [docs.index(d) for d in a] == sorted(docs.index(d) for d in a)
    assert subsample(docs, 100, seed=0) == docs


# ---------------------------------------------------------------------------------------- bad input


def write(tmp_path, text: str):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    return path


def test_unknown_task_is_named():
    with pytest.raises(UnknownTaskError, match="unknown task 'hellaswagg'.*arc_easy"):
        TaskEvalConfig(tasks=("hellaswagg",))
    with pytest.raises(KeyError):
        load_task("nope")


def test_jsonl_line_missing_field(tmp_path):
    path = write(tmp_path, '{"query": "q", "choices": [" a", " b"], "gold": 0}\n{"query": "q", "gold": 0}\n')
    with pytest.raises(TaskFormatError, match=r"bad.jsonl:2: missing field\(s\) \['choices'\]"):
        load_jsonl_task(path)


@pytest.mark.parametrize("gold", [2, -1])
def test_jsonl_gold_out_of_range(tmp_path, gold):
    path = write(tmp_path, json.dumps({"query": "q", "choices": [" a", " b"], "gold": gold}))
    with pytest.raises(TaskFormatError, match=f"'gold' {gold} out of range for 2 choices"):
        load_jsonl_task(path)


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", "not valid JSON"),
        ('["q"]', "expected a JSON object"),
        ('{"query": "q", "choices": " a", "gold": 0}', "'choices' must be a list"),
        ('{"query": "q", "choices": [" a", " b"], "gold": "0"}', "'gold' must be an integer"),
        ('{"query": "q", "choices": [" a"], "gold": 0}', "at least 2 choices"),
        ('{"query": 3, "choices": [" a", " b"], "gold": 0}', "'query' must be a string"),
    ],
)
def test_jsonl_malformed_lines(tmp_path, line, message):
    with pytest.raises(TaskFormatError, match=message):
        load_jsonl_task(write(tmp_path, line))


def test_empty_task(tmp_path):
    with pytest.raises(EmptyTaskError, match="holds no items"):
        load_jsonl_task(write(tmp_path, "\n  \n"))
    with pytest.raises(EmptyTaskError):
        accuracy([], [], "empty")


@pytest.mark.parametrize("limit", [0, -5])
def test_limit_must_be_positive(model, tokenizer, limit):
    with pytest.raises(ValueError, match="limit must be a positive number"):
        evaluate_tasks(model, tokenizer, "arc_easy", limit=limit)


def test_chat_template_missing(model):
    plain = char_tokenizer(chat_template=False)
    with pytest.raises(ChatTemplateError, match="has no chat template"):
        score_docs(model, plain, DOCS, chat_template=True)
    with pytest.raises(ChatTemplateError):
        evaluate_tasks(model, plain, "arc_easy", limit=2, chat_template=True)


def test_doc_validates_gold():
    with pytest.raises(TaskFormatError, match="out of range"):
        Doc("q", (" a", " b"), 2)


# ---------------------------------------------------------------------------------- bundled benchmarks


@pytest.mark.parametrize("name", sorted(T.TASKS))
def test_registry_tasks_load_offline(name):
    pytest.importorskip("pyarrow")
    try:
        task = load_task(name)
    except FileNotFoundError as exc:  # MissingAssetError subclasses it
        pytest.skip(str(exc))
    assert len(task.docs) > 100
    assert T.TASKS[name].prompt and T.TASKS[name].citation
    for doc in task.docs[:50]:
        assert 0 <= doc.gold < len(doc.choices) and all(doc.choices)


@pytest.mark.integration
def test_real_model_on_a_few_items_of_a_real_task():
    """SmolLM2 on 8 ARC-Easy items: packed scores equal separate passes, and it beats chance."""
    from frankenllama.models import load_model

    model, tokenizer = load_model()
    docs = subsample(load_task("arc_easy").docs, 8, seed=0)
    scores = score_docs(model, tokenizer, docs[:2], chat_template=True)
    for doc, row in zip(docs[:2], scores):
        for (context, continuation), value in zip(doc.pairs(), row):
            assert value == pytest.approx(manual_loglik(model, tokenizer, context, continuation, chat=True), abs=1e-3)
    result = accuracy(docs, score_docs(model, tokenizer, docs, chat_template=True), "arc_easy")
    assert result.acc > result.chance
