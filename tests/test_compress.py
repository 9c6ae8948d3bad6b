"""``compress`` on a pico llama saved as a folder, with its caches in a temporary folder.

Target parsing (every form and the bad ones), bad input that must fail before anything is written,
and the whole recipe end to end: the saved model meets the target, loads back to the logits of the
in-memory compressed model, its report is consistent with direct measurements, and a re-run reads
every step back instead of retraining.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config

from frankenllama import paths
from frankenllama.budget import count_params, unit_params
from frankenllama.cli import main
from frankenllama.compress import CompressConfig, CompressConfigError, TargetError, compress, parse_target
from frankenllama.compress.pipeline import REPORT_JSON, STEPS
from frankenllama.data import load_corpus, token_blocks
from frankenllama.eval.perplexity import perplexity
from frankenllama.eval.tasks import DEFAULT_TASKS as EVALUATOR_TASKS
from frankenllama.healing import trainer
from frankenllama.models import load_model
from tiny_lm import char_tokenizer, tiny_llama

WORDS = "the cat sat on a mat and a dog ran to the park while birds sang in old trees near the river bank".split()
LAYERS = 6


# --------------------------------------------------------------------------------------------------
# target parsing


@pytest.mark.parametrize("text, kind, value, dtype", [
    ("0.8", "fraction", 0.8, None), ("0.843", "fraction", 0.843, None), ("1.0", "fraction", 1.0, None),
    ("110M", "params", 110_000_000, None), ("1.2B", "params", 1_200_000_000, None), ("500k", "params", 500_000, None),
    ("123456", "params", 123_456, None), ("200MB@bf16", "bytes", 200_000_000, "bfloat16"),
    ("1GiB@f16", "bytes", 2**30, "float16"), ("64 MiB@fp32", "bytes", 64 * 2**20, "float32"),
    ("3MB@int8", "bytes", 3_000_000, "int8"), ("24L", "layers", 24, None), ("4l", "layers", 4, None),
])  # fmt: skip
def test_every_target_form_is_read(text, kind, value, dtype):
    target = parse_target(text)
    assert (target.kind, target.value, target.dtype) == (kind, value, dtype)


@pytest.mark.parametrize("text", ["", "abc", "1.5", "2.", "0", "0.0", "-3", "110X", "200MB@q3", "lots@bf16", "0MB@bf16",
                                  "24LL", "L", "1e6"])
def test_bad_target_forms_name_the_accepted_ones(text):
    with pytest.raises(TargetError, match=r"target|dtype"):
        parse_target(text)


def test_targets_become_the_budgets_they_mean():
    model = tiny_llama(num_layers=LAYERS)
    total, block = count_params(model), int(unit_params(model, "layer")[0])
    assert parse_target("0.8").budget(model, "layer").params == int(0.8 * total)
    assert parse_target(f"{total - 1}").budget(model, "sublayer").params == total - 1
    assert parse_target(f"{2 * (total - block)}B@bf16").budget(model, "layer").param_limit() == total - block
    assert parse_target("4L").budget(model, "layer").layer_fraction == pytest.approx(4 / LAYERS)
    # a sub-block strategy gets the size of the model with 4 blocks kept
    assert parse_target("4L").budget(model, "sublayer").params == total - 2 * block
    floor = total - (LAYERS - 1) * block
    assert parse_target(str(floor)).budget(model, "layer").params == floor  # one block kept: still possible
    for met in ("1.0", f"{LAYERS}L", f"{total}", f"{2 * total}B@bf16"):
        with pytest.raises(TargetError, match="already within it"):
            parse_target(met).budget(model, "layer")
    for everything in ("0L", str(floor - 1), "0.01"):
        with pytest.raises(TargetError, match="remove every block"):
            parse_target(everything).budget(model, "sublayer")


def test_profiles_score_their_tasks():
    default, thesis = (CompressConfig.from_profile("m", "0.8", p) for p in ("default", "thesis"))
    assert default.tasks == ("arc_easy", "piqa", "hellaswag") and default.eval_items == 150
    assert thesis.tasks == EVALUATOR_TASKS and len(thesis.tasks) == 8 and thesis.eval_items is None  # every item
    assert CompressConfig.from_profile("m", "0.8", "thesis", tasks=["piqa"]).tasks == ("piqa",)  # --tasks wins


def test_config_refuses_unknown_strategy_recipe_profile_and_settings():
    with pytest.raises(CompressConfigError, match="unknown strategy 'nope'"):
        CompressConfig("m", "0.8", strategy="nope")
    with pytest.raises(CompressConfigError, match="unknown healing recipe 'nope'"):
        CompressConfig("m", "0.8", heal="linear-patch+nope")
    with pytest.raises(CompressConfigError, match="unknown profile"):
        CompressConfig.from_profile("m", "0.8", "fast")
    with pytest.raises(CompressConfigError, match="unknown settings"):
        CompressConfig.from_profile("m", "0.8", tokenz=3)
    with pytest.raises(TargetError):
        CompressConfig("m", "big")


# --------------------------------------------------------------------------------------------------
# the pico workbook


def _workbook(root: Path) -> dict[str, str]:
    """A pico llama folder, an in-domain and an out-of-domain text file, and a JSONL task."""
    root.mkdir(parents=True, exist_ok=True)
    model, tokenizer = tiny_llama(num_layers=LAYERS), char_tokenizer()
    model.save_pretrained(root / "tiny")
    tokenizer.save_pretrained(root / "tiny")
    rng = random.Random(0)
    (root / "corpus.txt").write_text("\n\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 30))) for _ in range(600)))
    (root / "ood.txt").write_text("\n\n".join(" ".join(rng.choice(WORDS[:8]) for _ in range(20)).upper() for _ in range(300)))
    items = [{"query": f"Q: {w}?\nA:", "choices": [" yes", " no", " maybe"], "gold": i % 3} for i, w in enumerate(WORDS[:10])]
    (root / "task.jsonl").write_text("\n".join(json.dumps(x) for x in items) + "\n")
    return {"model": str(root / "tiny"), "corpus": str(root / "corpus.txt"), "ood_corpus": str(root / "ood.txt"),
            "task": str(root / "task.jsonl")}  # fmt: skip


def _config(w: dict[str, str], target: str = "0.8", **settings) -> CompressConfig:
    return CompressConfig.from_profile(w["model"], target, "smoke", corpus=w["corpus"], ood_corpus=w["ood_corpus"],
                                       tasks=(w["task"],), tokens=256, **settings)  # fmt: skip


@pytest.fixture
def workbook(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    return _workbook(tmp_path / "work")


def _written(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


@pytest.mark.parametrize("case", ["strategy", "recipe", "met", "everything", "exists", "non-llama", "missing", "target",
                                  "ood-is-healing-text", "no-corpus-file", "no-ood-file", "corpus-too-small",
                                  "unknown-task", "no-task-file", "malformed-task"])
def test_bad_input_is_one_line_naming_the_fix_and_writes_nothing(workbook, tmp_path, capsys, case):
    out = tmp_path / "out"
    args = {"--model": workbook["model"], "--target": "0.8", "--out": str(out), "--profile": "smoke"}
    expect = {"strategy": "unknown strategy", "recipe": "unknown healing recipe", "met": "already within it",
              "everything": "remove every block", "exists": "--force", "non-llama": "llama-family",
              "missing": "unknown model", "target": "cannot read target",
              "ood-is-healing-text": "never trained or calibrated on", "no-corpus-file": "--corpus",
              "no-ood-file": "--ood-corpus", "corpus-too-small": "give more documents", "unknown-task": "unknown task",
              "no-task-file": "does not exist", "malformed-task": "missing field(s) ['gold']"}[case]  # fmt: skip
    if case == "strategy":
        args["--strategy"] = "largest-first"
    elif case == "recipe":
        args["--heal"] = "linear-patch+magic"
    elif case == "met":
        args["--target"] = f"{LAYERS}L"
    elif case == "everything":
        args["--target"] = "0.01"
    elif case == "exists":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "non-llama":
        folder = tmp_path / "gpt2"
        GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=64).save_pretrained(folder)
        args["--model"] = str(folder)
    elif case == "missing":
        args["--model"] = str(tmp_path / "no-such-model")
    elif case == "ood-is-healing-text":
        args["--corpus"] = args["--ood-corpus"] = workbook["corpus"]
    elif case in ("no-corpus-file", "no-ood-file"):  # found out before any step, not at the evaluation
        args["--corpus" if case == "no-corpus-file" else "--ood-corpus"] = str(tmp_path / "no-such-text.txt")
    elif case == "corpus-too-small":
        (tmp_path / "two.txt").write_text("one document\n\nanother one\n")
        args["--corpus"] = str(tmp_path / "two.txt")
    elif case in ("unknown-task", "no-task-file", "malformed-task"):
        (tmp_path / "bad.jsonl").write_text('{"query": "Q?", "choices": [" a", " b"]}\n')
        args["--tasks"] = {"unknown-task": "piqa-ish", "no-task-file": str(tmp_path / "none.jsonl"),
                           "malformed-task": str(tmp_path / "bad.jsonl")}[case]
    else:
        args["--target"] = "lots"
    before = _written(tmp_path)
    assert main(["compress", *[x for kv in args.items() for x in kv]]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err[-1].startswith("python -m frankenllama compress: error:") and expect in err[-1], err
    assert not any("compress:" in line for line in err[:-1]), err  # it failed before any step began
    assert _written(tmp_path) == before  # no output, no cache entry, no temporary folder
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


# --------------------------------------------------------------------------------------------------
# end to end


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_compress_meets_the_target_saves_a_loadable_model_and_a_consistent_report(workbook, tmp_path, monkeypatch):
    config = _config(workbook)
    result = compress(config, tmp_path / "out")
    report = json.loads((tmp_path / "out" / REPORT_JSON).read_text())
    tokenizer = char_tokenizer()
    ids = torch.tensor([tokenizer.encode("the cat sat on the mat near the river")])
    # the saved model (sub-blocks removed: frankenllama's loader) is the in-memory one, and meets the target
    saved, _ = load_model(tmp_path / "out", device="cpu")
    torch.testing.assert_close(_logits(saved, ids), _logits(result.model, ids), rtol=0, atol=1e-6)
    limit = parse_target("0.8").budget(tiny_llama(num_layers=LAYERS), "sublayer").params
    assert count_params(saved) == report["size"]["params_compressed"] <= limit == report["size"]["param_limit"]
    assert report["size"]["meets_target"] and report["size"]["params_original"] == count_params(tiny_llama(LAYERS))
    choice = report["choice"]
    assert choice["strategy"] == "part-swap" and len(choice["removed"]) == len(choice["removed_sublayers"]) > 0
    # perplexities are the perplexity protocol on the same held-out blocks; the ratio is their quotient
    blocks = token_blocks(tokenizer, load_corpus(workbook["ood_corpus"], "eval"), config.block_len, max_blocks=config.eval_blocks)
    ood = report["perplexity"]["out-of-domain"]
    assert ood["ppl_compressed"] == pytest.approx(perplexity(saved, blocks), rel=1e-4)
    assert ood["ppl_ratio"] == pytest.approx(ood["ppl_compressed"] / ood["ppl_original"], rel=1e-9)
    assert ood["ratio_low"] <= ood["ppl_ratio"] <= ood["ratio_high"] and ood["blocks"] == len(blocks)
    for metric in ("acc_norm", "gold_bpb"):
        z = report["zero_shot"][metric]
        assert z["low"] <= z["diff"] <= z["high"]
        assert z["diff"] == pytest.approx(z["compressed"] - z["original"], abs=1e-9)
    assert report["zero_shot"]["items_per_task"] == {"task": config.eval_items}
    for metric in ("acc_norm", "gold_bpb"):  # one task: its own interval is the task average's difference
        t, z = report["zero_shot"]["per_task"][metric]["task"], report["zero_shot"][metric]
        assert t["n"] == config.eval_items and t["low"] <= t["diff"] <= t["high"]
        assert t["diff"] == pytest.approx(z["diff"], abs=1e-9)
    assert set(report["steps"]) == set(STEPS) and report["healing"]["recipe"].endswith("kd-lora")
    assert report["healing"]["tokens_seen"] == 256 and report["speed"]["decode_tps_b1"]["ratio"] > 0
    assert {"torch", "transformers"} <= set(report["provenance"]["versions"]) and report["provenance"]["code"]["version"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.count("| in-domain |") == 1 and f"| task | {config.eval_items} |" in md

    # the same command again: the folder holds this run, nothing is recomputed or rewritten
    stamp = (tmp_path / "out" / REPORT_JSON).stat().st_mtime_ns
    assert compress(config, tmp_path / "out").complete_before
    assert (tmp_path / "out" / REPORT_JSON).stat().st_mtime_ns == stamp
    # with force it is rebuilt (a new report after a code update), every step read back, the same model
    forced = compress(config, tmp_path / "out", force=True)
    assert not forced.complete_before and (tmp_path / "out" / REPORT_JSON).stat().st_mtime_ns != stamp
    assert all(forced.report["steps"][s]["cached"] for s in ("select", "heal", "evaluate", "speed"))
    assert forced.report["ids"] == report["ids"] and forced.report["zero_shot"] == report["zero_shot"]
    # killed before the final rename: every step is read back, nothing is retrained
    monkeypatch.setattr(trainer.RecipeTrainer, "step", lambda *a, **k: pytest.fail("retrained"))
    shutil.rmtree(tmp_path / "out")
    again = compress(config, tmp_path / "out")
    assert all(again.report["steps"][s]["cached"] for s in ("select", "heal", "evaluate", "speed"))
    assert again.report["ids"] == report["ids"]
    torch.testing.assert_close(_logits(again.model, ids), _logits(result.model, ids), rtol=0, atol=0)


def test_whole_block_strategy_saves_a_plain_transformers_folder(workbook, tmp_path):
    config = _config(workbook, "4L", strategy="angular-block", heal="linear-patch", calib_tokens=512)
    result = compress(config, tmp_path / "api")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "api", local_files_only=True)
    assert plain.config.num_hidden_layers == 4 and result.report["size"]["meets_target"]
    ids = torch.tensor([char_tokenizer().encode("a dog ran to the park")])
    torch.testing.assert_close(_logits(plain, ids), _logits(result.model, ids), rtol=0, atol=1e-6)
    assert result.report["healing"]["patch_fits"] and result.report["choice"]["removed_layers"] == result.report["choice"]["removed"]


def test_the_patch_is_planned_for_every_run_that_does_not_start_at_block_0():
    from frankenllama.compress.steps import heal_plan, patchable_layers
    from frankenllama.sublayer import prune_sublayers
    from frankenllama.surgery import drop_layers
    from frankenllama.units import layer_units, sublayer_id

    model = tiny_llama(num_layers=LAYERS)
    assert patchable_layers(drop_layers(model, [0, 3, 4])) == (3, 4)  # a cut at block 0 has no projection before it
    # block 2 lost its MLP: the run [3] after it is folded into block 2's attention output projection
    student = prune_sublayers(model, [sublayer_id(2, "mlp"), *layer_units([3]), sublayer_id(5, "attn")])
    assert patchable_layers(student) == (3,)
    plan, note = heal_plan(CompressConfig("m", "0.8", heal="linear-patch+kd-lora", tokens=256), student)
    assert plan.recipe == "linear-patch+kd-lora" and plan.patch_layers == (3,) and note is None
    at_zero = drop_layers(model, [0])
    plan, note = heal_plan(CompressConfig("m", "0.8", heal="linear-patch+kd-lora", tokens=256), at_zero)
    assert plan.recipe == "kd-lora" and "linear patch skipped" in note
    assert heal_plan(CompressConfig("m", "0.8", heal="linear-patch"), at_zero) == (None, note)


def test_training_batch_sets_the_optimizer_steps_and_evaluation_keeps_its_own():
    from frankenllama.compress.steps import heal_plan

    student = tiny_llama(num_layers=LAYERS)
    default = CompressConfig.from_profile("m", "0.8")
    assert (default.train_batch, default.tokens // (default.train_batch * default.block_len)) == (4, 32)
    plan, _ = heal_plan(CompressConfig("m", "0.8", heal="kd-lora", tokens=1024, train_batch=2, batch_size=8), student)
    assert plan.batch_size == 2  # blocks per optimizer step; batch_size only batches the perplexity forwards
    with pytest.raises(CompressConfigError, match="train_batch=0"):
        CompressConfig("m", "0.8", train_batch=0)
