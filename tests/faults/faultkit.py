"""Helpers of the fault tests: the kill-server client, damage to stored files, checks that nothing is partial."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from frankenllama.integrity import verify_cache
from scenarios import PREPARE

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


class KillServer:
    """A running ``killer.py``: ``run(scenario, workdir, kill=..., n=..., delay=..., copies=...)``."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
        self.proc = subprocess.Popen([sys.executable, str(HERE / "killer.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        ready = self.proc.stdout.readline()
        assert json.loads(ready) == {"ready": True}, ready

    def run(self, scenario: str, workdir: Path, kill: str = "none", **kw: Any) -> dict[str, Any]:
        """Run ``scenario`` in a forked child; return the server's reply plus the child's output, if any."""
        workdir.mkdir(parents=True, exist_ok=True)
        if scenario in PREPARE:
            PREPARE[scenario](workdir)
        out = workdir.parent / f"{workdir.name}.out.json"
        out.unlink(missing_ok=True)
        request = {"scenario": scenario, "workdir": str(workdir), "out": str(out), "kill": kill, **kw}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        outs = [out] if kw.get("copies", 1) == 1 else [Path(f"{out}.{pid}") for pid in reply["pids"]]
        reply["outputs"] = [json.loads(p.read_text()) for p in outs if p.exists()]
        return reply

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


_SHARED: list[KillServer] = []


def shared_server() -> KillServer:
    """One kill server for the whole test session (it costs an import of torch; closed at exit)."""
    if not _SHARED or _SHARED[0].proc.poll() is not None:
        _SHARED[:] = [KillServer()]
        atexit.register(_SHARED[0].close)
    return _SHARED[0]


def damage(path: Path, how: str) -> None:
    """Damage one stored file the way faults do: ``truncate`` (a half copy), ``zero``, ``bitflip``, ``missing``."""
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: min(100, len(data) // 2)])
    elif how == "zero":
        path.write_bytes(b"")
    elif how == "bitflip":
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1:])
    elif how == "missing":
        path.unlink()
    elif how == "garbage":
        path.write_bytes(b"\x00{not json" + data[:10])
    else:
        raise ValueError(how)


def assert_nothing_partial(root: Path) -> list[str]:
    """Every entry under ``root`` passes its checks (leftover temporary folders are allowed); return statuses."""
    if not root.exists():
        return []
    reports = verify_cache(root)
    bad = [(str(r.path), r.status, r.detail) for r in reports if r.status not in ("ok", "stale")]
    assert not bad, f"partial or corrupt entries after a kill: {bad}"
    assert not (root / ".quarantine").exists()
    return [r.status for r in reports]


def leftovers(root: Path) -> list[str]:
    """Temporary or half-replaced folders and files (``*.tmp``, ``.*.old``) and healing checkpoint
    folders (``.*.checkpoints``, which a finished heal removes) anywhere under ``root``."""
    return sorted(str(p) for p in root.rglob("*") if p.name.endswith((".tmp", ".old", ".checkpoints")))
