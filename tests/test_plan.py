"""The plan: shapes and FLOPs worked out by hand, device specs, placement, and SmolLM2's memory measured on this CPU."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from frankenllama.cli import main
from frankenllama.paths import MODELS_CACHE_DIR, ROOT
from frankenllama.plan import DeviceSpecError, Settings, meta_model, model_shape, parse_devices, plan

DATA = Path(__file__).parent / "data"
SMOLLM2 = MODELS_CACHE_DIR / "smollm2-135m"
TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, tie_word_embeddings=False)


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """A folder holding only a tiny llama's config.json, and a model.safetensors that is not a weight file."""
    LlamaConfig(**TINY).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not weights: reading this would fail")
    return tmp_path


def test_meta_build_reads_no_weights(tiny_folder):
    skeleton = meta_model(str(tiny_folder))
    assert {p.device.type for p in skeleton.parameters()} == {"meta"}
    assert plan(str(tiny_folder / "config.json"), "cpu").stages  # the config path works as well as the folder


def test_counts_and_flops_by_hand(tiny_folder):
    shape = model_shape(meta_model(str(tiny_folder)))
    # H=32, q=4·8=32, kv=2·8=16, I=48: q 32·32, k and v 32·16, o 32·32, gate/up/down 32·48 each
    matmul = 1024 + 512 + 512 + 1024 + 3 * 1536
    assert shape.block_matmul_params == matmul == 7680
    assert shape.block_params == matmul + 2 * 32  # + two RMSNorm weights
    assert shape.params == 64 * 32 + 2 * 7744 + 32 + 64 * 32 == 19616  # embed, blocks, final norm, untied head
    torch.manual_seed(0)
    assert shape.params == sum(p.numel() for p in LlamaForCausalLM(LlamaConfig(**TINY)).parameters())
    T = 8  # mean causal context (T + 1) / 2 = 4.5 positions; QKᵀ and A·V: 4 · q · 4.5
    assert shape.block_flops(T) == 2 * 7680 + 4 * 32 * 4.5 == 15936
    assert shape.head_flops() == 2 * 32 * 64
    assert shape.forward_flops(T) == 2 * 15936 + 4096
    assert shape.weight_bytes(4, layers=1) == (19616 - 7744) * 4


def test_tied_embeddings_counted_once():
    shape = model_shape(meta_model(str(DATA / "llama-3.1-8b")))
    assert not shape.tied and shape.head_params == shape.embed_params
    tied = model_shape(meta_model(str(SMOLLM2))) if (SMOLLM2 / "config.json").exists() else None
    if tied is not None:
        assert tied.tied and tied.params == 134_515_008  # SmolLM2-135M's published count


@pytest.mark.parametrize("spec, message", [
    ("3xfoo", "unknown device kind 'foo'"), ("0xH100", "at least 1"), ("GPU", "names no memory size"),
    ("2xcpu", "one CPU host"), ("", "cannot read"), ("H100-xGB", "cannot read"),
])
def test_device_spec_errors(spec, message):
    with pytest.raises(DeviceSpecError, match=message):
        parse_devices(spec)


def test_device_specs():
    two = parse_devices("2xH100-80GB")
    assert (two.kind, two.count, two.memory_bytes) == ("H100", 2, 80 * 2**30)
    assert parse_devices("A100-40GB").memory_bytes == 40 * 2**30
    generic = parse_devices("4x24GB", tflops=50)
    assert (generic.count, generic.memory_bytes, generic.tflops) == (4, 24 * 2**30, 50)
    assert parse_devices("cpu").is_cpu


def test_cli_bad_devices_exit_2(capsys):
    assert main(["plan", "--model", str(DATA / "llama-3.1-8b"), "--devices", "3xfoo"]) == 2
    err = capsys.readouterr().err
    assert "error: unknown device kind" in err and err.count("\n") == 1


def test_a_composed_recipe_plans_each_of_its_steps(capsys):
    config = str(DATA / "llama-3.1-8b")

    def rows(recipe: str) -> list[tuple[str, str]]:
        return [(s.name, s.what) for s in plan(config, "1xH100-80GB", Settings(recipe=recipe)).stages]

    patch, kd, both = rows("linear-patch"), rows("kd-lora"), rows("linear-patch+kd-lora")
    assert patch[4][0] == "linear patch" and kd[4][0] == "teacher top-k pass"  # after the 4 selection stages
    assert both == patch[:5] + kd[4:]  # the patch, then the distillation's rows, then the evaluation
    with pytest.raises(SystemExit) as exit_:
        main(["plan", "--model", config, "--heal", "linear-patch+magic"])
    assert exit_.value.code == 2 and "cannot plan healing recipe 'magic'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # compress's composition rules: the training-free patch first
        main(["plan", "--model", config, "--heal", "kd-lora+linear-patch"])
    assert exit_.value.code == 2 and "the training-free patch must come first" in capsys.readouterr().err


def test_llama_8b_on_one_h100(capsys):
    assert main(["plan", "--model", str(DATA / "llama-3.1-8b"), "--devices", "1xH100-80GB", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["shape"]["params"] == 8_030_261_248  # Llama-3.1-8B's published count
    assert out["placement"]["0"] == pytest.approx(16e9, rel=0.05)  # bf16 weights
    stages = {s["name"] + s["what"].split(",")[0]: s for s in out["stages"]}
    assert all(s["fits"] for s in out["stages"])
    colocated = next(s for s in out["stages"] if s["alternative"])
    cached = next(s for s in out["stages"] if "cached teacher" in s["what"])
    assert colocated["memory"]["0"] > cached["memory"]["0"] + 15e9  # the teacher's 16 GB of weights
    assert len(stages) == 8


def test_llama_70b_on_two_h100_uses_both():
    p = plan(str(DATA / "llama-3.1-70b" / "config.json"), "2xH100-80GB")
    assert p.shape.params == 70_553_706_496
    assert sum(p.placement.weights.values()) == pytest.approx(141e9, rel=0.05)
    assert p.placement.layers[0] > 0 and p.placement.layers[1] > 0 and "cpu" not in p.placement.weights
    assert sum(p.placement.layers.values()) == 80
    colocated = next(r for r in p.stages if r.alternative)
    assert not colocated.fits  # 70B student + 70B teacher cannot share 2 × 80 GiB: heal from cached targets
    assert next(r for r in p.stages if "cached teacher" in r.what).fits


# --------------------------------------------------------------------------------------------------
# Measured on this CPU: peak resident memory of the similarity pass and of one ablation-scan step
# --------------------------------------------------------------------------------------------------

_MEASURE = textwrap.dedent("""
    import json, resource, sys, time, torch
    from pathlib import Path
    torch.manual_seed(0)
    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * 4096
    def peak():
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024
    def reset_peak():
        Path("/proc/self/clear_refs").write_text("5")
    what, folder, n, T, B = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
    from transformers import AutoModelForCausalLM
    ids = torch.randint(0, 49152, (n, T))
    base = rss()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():  # weights may be mmapped from the file: make them resident before measuring
        [float(p.sum()) for p in model.parameters()]
    weights = rss() - base
    reset_peak()
    start = time.perf_counter()
    if what == "similarity":
        from frankenllama.similarity import layer_similarity
        layer_similarity(model, ids, batch_size=B)
    else:  # the scan's first step (unit 0 runs every block): stop at the progress bar's second update
        import frankenllama.scoring.measures as scan_module
        class Stop(Exception): pass
        class Bar:
            def __init__(self, *a, **k): self.n = 0
            def update(self, *a):
                self.n += 1
                if self.n == 1: raise Stop
        scan_module.tqdm = Bar
        try:
            scan_module.ablation_scan(model, ids, batch_size=B)
        except Stop:
            pass
    seconds = time.perf_counter() - start
    print(json.dumps({"peak": peak() - base, "weights": weights, "seconds": seconds}))
""")


def _measure(what: str, n: int, T: int, B: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _MEASURE, what, str(SMOLLM2), str(n), str(T), str(B)],
                         capture_output=True, text=True, check=True, cwd=ROOT, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1",
                              "PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.integration
def test_smollm2_estimates_against_measurements():
    from frankenllama.models import model_folder

    assert model_folder("smollm2-135m") == SMOLLM2  # dequantises the shipped GGUF once if it is not prepared yet
    n, T, B = 4, 128, 4  # one batch of four 128-token blocks keeps the test short on 2 shared cores
    settings = Settings(calib_tokens=n * T, calib_block_len=T, calib_batch=B, score_tokens=n * T,
                        score_block_len=T, score_batch=B)
    p = plan(str(SMOLLM2), "cpu", settings)
    rows = {r.name: r for r in p.stages}
    sim, scan = _measure("similarity", n, T, B), _measure("ablation", n, T, B)
    estimates = {"similarity": rows["similarity"].memory["cpu"], "ablation": rows["ablation scan"].memory["cpu"]}
    weights = p.shape.weight_bytes(4)
    for name, measured in (("similarity", sim), ("ablation", scan)):
        print(f"{name}: peak memory estimated {estimates[name] / 1e6:.0f} MB, measured {measured['peak'] / 1e6:.0f} MB "
              f"(weights estimated {weights / 1e6:.0f} MB, measured {measured['weights'] / 1e6:.0f} MB; beyond the "
              f"weights estimated {(estimates[name] - weights) / 1e6:.0f} MB, measured {(measured['peak'] - measured['weights']) / 1e6:.0f} MB)")
        assert 0.5 <= measured["peak"] / estimates[name] <= 2.0
    step = p.shape.forward_flops(T) * B * T * 2 + p.shape.head_flops() * B * T * 2  # base + unit 0 with KL
    print(f"similarity time: estimated {rows['similarity'].seconds:.2f} s at {p.devices.tflops} TFLOP/s, "
          f"measured {sim['seconds']:.2f} s ({rows['similarity'].forward_flops / sim['seconds'] / 1e9:.1f} GFLOP/s)")
    print(f"ablation step time: estimated {step / p.devices.tflops / 1e12:.2f} s, measured {scan['seconds']:.2f} s")


# --------------------------------------------------------------------------------------------------
# compress's run: --target
# --------------------------------------------------------------------------------------------------
def test_compress_workload_is_compress_profile():
    from frankenllama.compress.config import PROFILES, CompressConfig
    from frankenllama.plan.stages import ITEM_TOKENS

    s, c = Settings.from_compress("default"), CompressConfig(model="m", target="0.8", **PROFILES["default"])
    assert (s.workload, s.recipe, s.heal_tokens, s.patch_tokens, s.lora_rank) == (
        "compress", c.heal, c.tokens, c.calib_tokens, 32)
    assert s.eval_tokens == c.eval_items * sum(ITEM_TOKENS[t] for t in c.tasks)
    assert s.ppl_tokens == 2 * c.eval_blocks * c.block_len
    notebooks = Settings.from_profile()  # notebook 04's default: 50 items of each of its three tasks, rank 8
    assert notebooks.eval_tokens == 50 * (ITEM_TOKENS["arc_easy"] + ITEM_TOKENS["piqa"] + ITEM_TOKENS["hellaswag"])
    assert notebooks.lora_rank == 8 and notebooks.workload == "notebooks"
    thesis = Settings.from_compress("thesis")
    assert thesis.heal_tokens == PROFILES["thesis"]["tokens"] and thesis.eval_tokens > 20 * s.eval_tokens  # every item
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        Settings.from_compress("fast")


def test_compress_plan_on_llama_8b():
    config = str(DATA / "llama-3.1-8b")
    p = plan(config, "1xH100-80GB", Settings.from_compress(), target="0.8")
    # 0.2 × 8,030,261,248 parameters over blocks of 218,112,000 (attention 2·4096² + 2·4096·1024, MLP 3·4096·14336,
    # two norms): 7.4 blocks' worth, so 8
    assert p.settings.k == 8
    names = [r.name for r in p.stages]
    assert names == ["similarity", "ablation scan", "sub-block scan", "SLEB greedy", "swap search", "part-swap search",
                     "linear patch", "teacher top-k pass", "heal kd-lora", "heal kd-lora", "evaluate both"]
    rows = {r.name: r for r in p.stages}
    assert "32,768 tok" in rows["linear patch"].what and "64 units" in rows["sub-block scan"].what
    notebooks = plan(config, "1xH100-80GB", Settings(k=8, eval_tokens=p.settings.eval_tokens))
    one = next(r for r in notebooks.stages if r.name == "zero-shot eval")
    # the original (32 blocks) and the pruned model (24), plus perplexity
    assert rows["evaluate both"].forward_flops > 2 * one.forward_flops
    assert plan(config, "1xH100-80GB", Settings.from_compress(), target="24L").settings.k == 8
    bounds = {"SLEB greedy", "swap search", "part-swap search", "linear patch"}  # work the run may skip
    assert all(r.upper_bound == (r.name in bounds) for r in p.stages)


@pytest.mark.parametrize("argv, message", [
    (["--target", "0.8", "--k", "4"], "--k and --target both"),
    (["--target", "1.5"], "must be in (0, 1]"),
    (["--target", "1.0"], "already within it"),
    (["--target", "0.8", "--heal", "lora"], "compress's run, which heals with linear-patch+kd-lora"),
])
def test_compress_plan_bad_input(argv, message, capsys):
    assert main(["plan", "--model", str(DATA / "llama-3.1-8b"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "planning" not in err  # one line, before any work


def test_compress_plan_cli(capsys):
    argv = ["plan", "--model", str(DATA / "llama-3.1-8b"), "--devices", "1xH100-80GB", "--target", "0.8", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["settings"]["workload"] == "compress" and out["settings"]["k"] == 8
    assert [s["name"] for s in out["stages"]][-1] == "evaluate both"
    rows = {s["name"]: s for s in out["stages"]}
    assert main([*argv, "--calib-tokens", "65536", "--tokens", "1024"]) == 0  # compress's own flags and meanings
    settings = json.loads(capsys.readouterr().out)["settings"]
    assert (settings["patch_tokens"], settings["heal_tokens"]) == (65536, 1024)
    assert settings["calib_tokens"] == out["settings"]["calib_tokens"]  # the similarity pass's, as compress keeps it
    assert rows["swap search"]["upper_bound"] and not rows["teacher top-k pass"]["upper_bound"]
    assert [s["alternative"] for s in out["stages"]].count(True) == 1  # the co-located teacher, beside the cached route
    assert out["total_seconds"] == pytest.approx(sum(s["seconds"] for s in out["stages"] if not s["alternative"]))
    assert main(argv[:-1]) == 0  # the table: bounds marked, and a total
    table = capsys.readouterr().out
    assert "<= " in next(line for line in table.splitlines() if line.startswith("swap search"))
    assert "<= " in next(line for line in table.splitlines() if line.startswith("total"))


def test_sleb_row_counts_the_shortlist(tmp_path):
    LlamaConfig(**(TINY | {"num_hidden_layers": 6})).save_pretrained(tmp_path)
    m = model_shape(meta_model(str(tmp_path)))
    T, N = 128, 1024
    f, h = m.block_flops(T), m.head_flops()

    def sleb(shortlist):
        settings = Settings(k=3, score_tokens=N, score_block_len=T, shortlist=shortlist)
        return next(r for r in plan(str(tmp_path), "cpu", settings).stages if r.name == "SLEB greedy").forward_flops

    # step 0 is the ablation scan's; steps 1 and 2 have 5 and 4 alive blocks, each candidate runs about half of them
    exact = N * (6 * f + (5 + 1) * 5 / 2 * f + 5 * h + (4 + 1) * 4 / 2 * f + 4 * h)
    short = N * (6 * f + (2 + 1) * 5 / 2 * f + 2 * h + (2 + 1) * 4 / 2 * f + 2 * h)
    assert sleb(None) == pytest.approx(exact) and sleb(2) == pytest.approx(short)
    assert Settings.from_profile().shortlist == 8  # the default profile's greedy searches
