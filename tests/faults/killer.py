"""A fork server for the fault tests: runs named scenarios in forked children, kills them with SIGKILL.

Importing torch and transformers takes seconds; forking a process that has them takes milliseconds,
so the suite can afford dozens of killed runs. Started by ``faultkit.KillServer``; reads one JSON
request per line on stdin and answers one JSON line on stdout:

  {"scenario": name, "workdir": dir, "out": file, "kill": mode, "n": int, "delay": s, "copies": int}

``kill``: ``"count"`` runs undisturbed and reports how many traced lines ran; ``"none"`` runs
undisturbed; ``"line"`` SIGKILLs the child when it reaches its ``n``-th traced line (a precise,
reproducible point anywhere in the cache, the integrity checks, the computation, or the
numpy / zipfile / json / safetensors / transformers code that writes the files); ``"time"`` SIGKILLs
it ``delay`` seconds after the fork (a point that may fall inside C code, e.g. mid-``write``).
``copies`` > 1 forks that many children at once (two runs of one key). The child writes
``{"result", "lines", "elapsed"}`` to ``out`` (the harness's file, not under test; written then
renamed, so a kill never leaves half of it).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1])]

import scenarios  # noqa: E402  (after the path set-up; imports torch, transformers, frankenllama)
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.disable_progress_bar()

TRACED = ("/frankenllama/", "zipfile", "npyio", "numpy/lib/format", "/json/", "shutil", "tempfile",
          "safetensors", "transformers/modeling_utils", "transformers/tokenization_utils_base")


def _trace(kill_at: int | None, counter: list[int]):
    """A ``sys.settrace`` function counting line events in ``TRACED`` files; SIGKILLs at ``kill_at``.

    ``counter[1]``: the count when the first ``atomic_dir`` or ``atomic_file`` began (where the writing starts).
    """
    def local(frame, event, arg):
        if event == "line":
            counter[0] += 1
            if counter[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return local

    def global_(frame, event, arg):
        name = frame.f_code.co_filename
        if counter[1] is None and frame.f_code.co_name in ("atomic_dir", "atomic_file"):
            counter[1] = counter[0]
        return local if any(t in name for t in TRACED) else None

    return global_


def _child(req: dict) -> None:
    counter = [0, None]
    try:
        if req["kill"] in ("line", "count"):
            sys.settrace(_trace(req.get("n") if req["kill"] == "line" else None, counter))
        start = time.perf_counter()
        result = scenarios.SCENARIOS[req["scenario"]](Path(req["workdir"]))
        elapsed = time.perf_counter() - start
        sys.settrace(None)
        out = req["out"] if req.get("copies", 1) == 1 else f"{req['out']}.{os.getpid()}"
        # Written then renamed: a time kill landing during this write must not leave a half report.
        partial = Path(f"{out}.partial")
        partial.write_text(json.dumps({"result": result, "lines": counter[0], "write_start": counter[1],
                                       "elapsed": elapsed}))
        os.replace(partial, out)
        code = 0
    except BaseException:
        sys.settrace(None)
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve(req: dict) -> dict:
    pids = []
    for _ in range(req.get("copies", 1)):
        pid = os.fork()
        if pid == 0:
            _child(req)
        pids.append(pid)
    if req["kill"] == "time":
        time.sleep(req["delay"])
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    statuses = [os.waitpid(pid, 0)[1] for pid in pids]
    return {
        "pids": pids,
        "signals": [os.WTERMSIG(s) if os.WIFSIGNALED(s) else None for s in statuses],
        "codes": [os.WEXITSTATUS(s) if os.WIFEXITED(s) else None for s in statuses],
    }


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(serve(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
