"""Item-level agreement of the zero-shot scorer with lm-evaluation-harness (integration; needs ``lm_eval``).

Runs ``bench/lmeval_agreement.py``'s comparison on a few items per task (ARC-Easy, PIQA, HellaSwag)
of the real SmolLM2. Skipped where lm-eval is not installed (it is not a dependency; the script's
docstring says how to install it beside the project's venv).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")
pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[1] / "bench" / "lmeval_agreement.py"


def _bench():
    spec = importlib.util.spec_from_file_location("lmeval_agreement", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scorer_decides_items_as_lm_eval_does(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    report = _bench().compare("smollm2-135m", limit=20, seed=0, batch_size=16)
    for task, r in report.items():
        assert r["n"] == 20
        assert r["max_abs_ll_diff"] < 1e-3, task  # the same log-likelihoods, up to float rounding
        assert r["acc_agree"] == 1.0, (task, r["differences"])
        # lm-eval divides by the choice's length without the leading space, we with it (see the report)
        assert r["acc_norm_agree_with_lmeval_length"] == 1.0, (task, r["differences"])
        assert r["acc_norm_agree"] >= 0.9, (task, r["differences"])
