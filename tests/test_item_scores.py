"""Per-item continuous scores of zero-shot evaluation (gold_bpb, gold_prob) against hand computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from frankenllama.eval.tasks import Doc
from frankenllama.eval.zero_shot import ItemScore, evaluate_tasks, item_scores
from test_tasks import manual_loglik
from tiny_lm import char_tokenizer, tiny_llama

ITEMS = [
    {"query": "Q: 1+1?\nA:", "choices": [" 2", " 3", " four"], "gold": 0},
    {"query": "Sky is ", "choices": ["blue", "red"], "gold": 1},  # the trailing space moves into the scored continuation
    {"query": "x", "choices": [" yes", " no"], "gold": 0},
]


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("items") / "hand.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in ITEMS))
    return path


@pytest.mark.parametrize("chat", [False, True])
def test_gold_bpb_and_gold_prob_equal_hand_computation_from_logits(tokenizer, task_file, chat):
    model = tiny_llama()
    result = evaluate_tasks(model, tokenizer, str(task_file), chat_template=chat)["hand"]
    assert [r.item for r in result.items] == [0, 1, 2]
    for item, rec in zip(ITEMS, result.items):
        ll = [manual_loglik(model, tokenizer, item["query"], c, chat) for c in item["choices"]]
        gold = item["gold"]
        moved = item["query"].endswith(" ") and not chat  # inside the chat template the space is not trailing
        scored = " " * moved + item["choices"][gold]
        assert rec.gold_bpb == pytest.approx(-ll[gold] / math.log(2) / len(scored.encode("utf-8")), rel=1e-4)
        probs = np.exp(ll) / np.exp(ll).sum()
        assert rec.gold_prob == pytest.approx(probs[gold], rel=1e-4)
        norm = np.array([v / len(c) for v, c in zip(ll, item["choices"])])
        assert rec.gold_prob_norm == pytest.approx(np.exp(norm[gold]) / np.exp(norm).sum(), rel=1e-4)
        assert rec.acc == int(np.argmax(ll) == gold) and rec.acc_norm == int(np.argmax(norm) == gold)
    # the aggregates are the means of the per-item records
    assert result.acc == pytest.approx(np.mean([r.acc for r in result.items]))
    assert result.acc_norm == pytest.approx(np.mean([r.acc_norm for r in result.items]))


def test_uniform_model_costs_log2_vocab_bits_per_byte(tokenizer, task_file):
    """Zero embeddings: every logit is 0, each one-byte character token costs log2 V bits, every choice alike."""
    model = tiny_llama()
    with torch.no_grad():
        model.get_input_embeddings().weight.zero_()
    result = evaluate_tasks(model, tokenizer, str(task_file))["hand"]
    for item, rec in zip(ITEMS, result.items):
        assert rec.gold_bpb == pytest.approx(math.log2(model.config.vocab_size), rel=1e-5)
        lengths = np.array([len(c) + item["query"].endswith(" ") for c in item["choices"]])
        probs = np.exp(-lengths * math.log(model.config.vocab_size))
        assert rec.gold_prob == pytest.approx(probs[item["gold"]] / probs.sum(), rel=1e-4)


def test_gold_probabilities_of_all_choices_sum_to_one():
    doc = Doc("q", (" a", " bb", " ccc"), 0)
    ll = [-2.0, -3.5, -1.0]
    total = total_norm = 0.0
    for gold in range(3):  # the same item with each choice as gold: the three probabilities
        rec = item_scores([Doc(doc.query, doc.choices, gold)], [ll], [len(doc.choices[gold])], [7])[0]
        total += rec.gold_prob
        total_norm += rec.gold_prob_norm
        assert rec.item == 7
    assert total == pytest.approx(1.0) and total_norm == pytest.approx(1.0)
    rec = item_scores([doc], [ll], [2], [0])[0]
    assert rec == ItemScore(0, 0, 0, 2.0 / math.log(2) / 2, rec.gold_prob, rec.gold_prob_norm)
    assert rec.gold_prob == pytest.approx(math.exp(-2.0) / (math.exp(-2.0) + math.exp(-3.5) + math.exp(-1.0)))


def test_item_ids_are_dataset_indices_shared_by_every_model(tokenizer, tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(json.dumps({"query": f"q{i}", "choices": [" a", " b"], "gold": i % 2}) for i in range(20)))
    a = evaluate_tasks(tiny_llama(seed=0), tokenizer, str(path), limit=5, seed=3)["many"]
    b = evaluate_tasks(tiny_llama(seed=1), tokenizer, str(path), limit=5, seed=3)["many"]
    ids = [r.item for r in a.items]
    assert ids == [r.item for r in b.items] and ids == sorted(ids) and len(set(ids)) == 5 and max(ids) < 20
