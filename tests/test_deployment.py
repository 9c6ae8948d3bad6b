"""The deployment study's pieces that need no llama.cpp: config validation, device budget, Pareto front."""

from __future__ import annotations

import csv

import pytest

from frankenllama import cli
from frankenllama.export.budget import best_under_memory, kv_cache_bytes, parse_bytes
from frankenllama.figures.deployment import pareto_front, plot_quality_vs_bytes
from frankenllama.stages.deployment import DeploymentConfig

KV = {"kv_layers": 30, "n_kv_heads": 3, "head_dim": 64}
TABLE = [
    {"variant": "k=0", "k": 0, "healed": False, "qtype": "f16", "file_bytes": 270_000_000, "ppl": 17.0, "top1": 1.0,
     "decode_tok_s": 50, **KV},
    {"variant": "k=0", "k": 0, "healed": False, "qtype": "q4_0", "file_bytes": 92_000_000, "ppl": 19.0, "top1": 0.9,
     "decode_tok_s": 90, **KV},
    {"variant": "k=6", "k": 6, "healed": False, "qtype": "q4_0", "file_bytes": 80_000_000, "ppl": 33.0, "top1": 0.7,
     "decode_tok_s": 100, **KV, "kv_layers": 25},
    {"variant": "k=6", "k": 6, "healed": False, "qtype": "f16", "file_bytes": 230_000_000, "ppl": 31.0, "top1": 0.8,
     "decode_tok_s": 60, **KV, "kv_layers": 25},
]


def test_kv_cache_bytes_by_hand():
    # 2 (K, V) x 30 layers x 3 heads x 64 dims x 2048 positions x 2 bytes
    assert kv_cache_bytes(TABLE[0], 2048) == 2 * 30 * 3 * 64 * 2048 * 2 == 47_185_920


def test_best_under_memory_picks_lowest_perplexity_that_fits():
    assert best_under_memory(TABLE, 10**9, 2048)["qtype"] == "f16"
    best = best_under_memory(TABLE, 150_000_000, 2048)
    assert (best["variant"], best["qtype"]) == ("k=0", "q4_0")
    assert best["footprint_bytes"] == 92_000_000 + 47_185_920
    best = best_under_memory(TABLE, 125_000_000, 2048)  # only the pruned q4_0 fits (80 + 39.3 MB)
    assert (best["variant"], best["qtype"]) == ("k=6", "q4_0")
    with pytest.raises(ValueError, match="smallest, k=6 q4_0, needs 119.3 MB"):
        best_under_memory(TABLE, 64_000_000, 2048)


def test_parse_bytes():
    assert parse_bytes("64MB") == 64_000_000 and parse_bytes("1.5GiB") == 3 * 2**29 and parse_bytes("1000") == 1000
    with pytest.raises(ValueError, match="memory size"):
        parse_bytes("lots")


def test_budget_verb(tmp_path, capsys):
    path = tmp_path / "deployment.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(TABLE[2]))
        writer.writeheader()
        writer.writerows(TABLE)
    assert cli.main(["budget", "--memory", "150MB", "--context", "2048", "--table", str(path)]) == 0
    assert capsys.readouterr().out.startswith("k=0 q4_0: perplexity 19.00")
    assert cli.main(["budget", "--memory", "64MB", "--context", "2048", "--table", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing fits" in err
    assert cli.main(["budget", "--memory", "64MB", "--table", str(tmp_path / "none.csv")]) == 2


def test_pareto_front_and_figure(tmp_path):
    front = pareto_front(TABLE)
    assert [(r["variant"], r["qtype"]) for r in front] == [("k=6", "q4_0"), ("k=0", "q4_0"), ("k=0", "f16")]
    plot_quality_vs_bytes(TABLE, tmp_path, name="q")
    assert (tmp_path / "q.pdf").is_file() and (tmp_path / "q.png").is_file()


def test_deployment_config_validates():
    config = DeploymentConfig(removals={6: [13, 14, 15, 16, 17, 18], 3: [16, 17, 18]})
    assert config.removals == ((3, (16, 17, 18)), (6, (13, 14, 15, 16, 17, 18))) and config.ks == [0, 3, 6]
    with pytest.raises(ValueError, match="2·k sublayer"):
        DeploymentConfig(removals={3: [33, 34, 35]}, granularity="sublayer")
    with pytest.raises(ValueError, match="qtypes"):
        DeploymentConfig(qtypes=("q3_k",))
    with pytest.raises(ValueError, match="healed"):
        DeploymentConfig(healed="/nonexistent")
