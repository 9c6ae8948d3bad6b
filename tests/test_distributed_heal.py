"""Distributed healing with accelerate (issue 13): two CPU processes (DDP over gloo, started by
``accelerate launch``) heal the tiny llama to the weights of one process at the same global batch and
seed, and a two-process run stopped after a checkpoint resumes to the same weights.

``accelerate launch --cpu`` starts a single process in accelerate 1.15 (its simple launcher), so the
two processes are started with ``--multi_gpu``, which on a machine without a GPU runs torchrun and,
with ``Accelerator(cpu=True)``, accelerate's MULTI_CPU DDP.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_llama, tiny_tokenizer
from frankenllama.healing.launch import STOP_ENV, STOPPED, parse_args
from frankenllama.surgery import drop_layers

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).with_name("accelerate")
pytestmark = pytest.mark.skipif(not ACCELERATE.exists(), reason="the accelerate launcher is not installed next to python")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A 4-block teacher, the student cut from it (blocks 1 and 2 removed), train and eval blocks, in one folder."""
    folder = tmp_path_factory.mktemp("heal")
    tok = tiny_tokenizer()
    teacher = tiny_llama(4, seed=1)
    for name, model in (("teacher", teacher), ("student", drop_layers(teacher, [1, 2]))):
        model.save_pretrained(folder / name)
        tok.save_pretrained(folder / name)
    g = torch.Generator().manual_seed(0)
    np.save(folder / "train.npy", torch.randint(3, 128, (12, 16), generator=g).numpy())
    np.save(folder / "eval.npy", torch.randint(3, 128, (2, 16), generator=g).numpy())
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on a timeout kill the whole group (launcher and workers) and fail."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{' '.join(cmd[:6])} … did not finish in {timeout} s (killed with its workers)")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _heal(folder: Path, out: str, recipe: str, processes: int, stop: int = 0, checkpoint_every: int = 0,
          extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:  # fmt: skip
    args = ["-m", "frankenllama.healing.launch", "--student", str(folder / "student"), "--recipe", recipe,
            "--tokens", "384", "--batch-size", "4", "--seed", "3", "--train-blocks", str(folder / "train.npy"),
            "--eval-blocks", str(folder / "eval.npy"), "--out", str(folder / out), "--cache-dir", str(folder / "cache"),
            "--checkpoint-every", str(checkpoint_every), "--lr", "0.01", *extra]  # fmt: skip
    if recipe.startswith(("kd", "linear-patch")):
        args += ["--teacher", str(folder / "teacher")]
    if processes > 1:
        cmd = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()), *args]  # fmt: skip
    else:
        cmd = [sys.executable, *args]
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", STOP_ENV: str(stop)}
    return _run(cmd, env)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    moved = max(float((a[k] - start[k]).abs().max()) for k in a)
    assert moved > 1e-3  # training changed the weights, so agreement below means something
    # Float rounding: DDP sums two half-batch gradients where one process sums one batch, and Adam's
    # first steps (update ≈ lr · g / |g|) magnify rounding in tiny gradient entries; measured worst
    # case 2.5e-6 against a largest weight change of ~0.1: allow 0.1 % of the change training made.
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"largest weight difference {diff:.2e}, largest change by training {moved:.2e}")  # shown by pytest -s
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-3 * moved, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize(("recipe", "extra"), [("kd-full", ()), ("partial", ()), ("linear-patch+lora", ()),
                                               ("kd-lora", ("--kd-top-k", "0"))], ids=["kd-full", "partial",
                                               "linear-patch+lora", "kd-lora-online-teacher"])  # fmt: skip
def test_two_processes_match_one(inputs, recipe, extra) -> None:
    """Full weights from cached teacher targets, the blocks next to the cut, the patch then LoRA, and LoRA
    distilled from a teacher co-located in every process: DDP ends where one process does."""
    name = f"{recipe}{'-online' if extra else ''}"
    one = _heal(inputs, f"{name}-1", recipe, 1, extra=extra)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _heal(inputs, f"{name}-2", recipe, 2, extra=extra)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "on 2 process(es)" in two.stdout
    _assert_same(_weights(inputs / f"{name}-2"), _weights(inputs / f"{name}-1"), _weights(inputs / "student"))


def test_killed_two_process_run_resumes(inputs) -> None:
    """kd-lora from the cached teacher targets: stopped after step 3 (checkpoint at 3), resumed, same weights."""
    ref = _heal(inputs, "kd-ref", "kd-lora", 1)
    assert ref.returncode == 0, ref.stderr[-3000:]
    killed = _heal(inputs, "kd-2", "kd-lora", 2, stop=3, checkpoint_every=3)
    assert killed.returncode != 0 and f"stopped after step 3 ({STOP_ENV})" in killed.stdout, killed.stderr[-3000:]
    assert not (inputs / "kd-2").exists() and (inputs / ".kd-2.checkpoints" / "checkpoint.json").is_file()
    resumed = _heal(inputs, "kd-2", "kd-lora", 2, checkpoint_every=3)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step 3" in resumed.stdout and "on 2 process(es)" in resumed.stdout
    assert not (inputs / ".kd-2.checkpoints").exists()  # a finished run removes its checkpoints
    _assert_same(_weights(inputs / "kd-2"), _weights(inputs / "kd-ref"), _weights(inputs / "student"))


def test_launch_arguments() -> None:
    args = parse_args(["--student", "s", "--out", "o", "--batch-size", "8"])
    assert args.batch_size == 8 and args.recipe == "lora" and STOPPED != 0
    with pytest.raises(SystemExit):
        parse_args(["--out", "o"])  # --student is required
