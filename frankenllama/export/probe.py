"""``python frankenllama/export/probe.py MODEL.gguf``: one llama.cpp run, measured from inside a fresh process.

Run it as a script, not with ``-m``: importing the ``frankenllama`` package would load torch and
transformers into the measured process. It imports only the standard library, NumPy and llama_cpp.

Prints one JSON line: load seconds, prefill and decode tokens/s (``llama-bench``'s pp / tg split:
one batch of ``--prompt`` tokens, then ``--decode`` single-token steps), and the process's peak
resident set size (``VmHWM``) after the run, with the peak before the model was
loaded (Python, NumPy and the bindings) as ``baseline_rss_bytes``. Weights are memory-mapped, so the
pages the run touches count towards the peak: it is what the model occupies while generating. A
fresh process per measurement keeps one model's pages out of another's peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def _peak_rss_bytes() -> int:
    """This process's peak resident set: ``VmHWM`` of /proc/self/status (Linux), else ``ru_maxrss``.

    ``ru_maxrss`` survives ``execve`` on Linux, so a child of a large parent would report the parent's
    peak; ``VmHWM`` belongs to the process's own address space.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def probe(path: str, prompt: int, decode: int, threads: int, n_ctx: int) -> dict[str, float]:
    """Load ``path`` in llama.cpp, prefill ``prompt`` tokens, decode ``decode`` tokens; time and measure."""
    import numpy as np
    from llama_cpp import Llama

    baseline = _peak_rss_bytes()
    start = time.perf_counter()
    llm = Llama(model_path=path, n_ctx=n_ctx, n_batch=prompt, n_ubatch=prompt, n_threads=threads,
                n_threads_batch=threads, logits_all=False, verbose=False)
    load = time.perf_counter() - start
    low = min(100, llm.n_vocab() // 2)  # past the special tokens of real vocabularies; any id of a tiny one
    tokens = [int(t) for t in np.random.default_rng(0).integers(low, llm.n_vocab(), prompt)]
    llm.eval(tokens[:8])  # warm-up: first-touch page faults and thread start-up stay out of the timings
    llm.reset()
    start = time.perf_counter()
    llm.eval(tokens)
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(decode):
        llm.eval([tokens[i % prompt]])
    dec = time.perf_counter() - start
    return {"load_s": load, "prefill_tok_s": prompt / prefill, "decode_tok_s": decode / dec,
            "peak_rss_bytes": _peak_rss_bytes(), "baseline_rss_bytes": baseline}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="probe.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("model", help="GGUF file")
    parser.add_argument("--prompt", type=int, default=128, help="prefill tokens")
    parser.add_argument("--decode", type=int, default=32, help="decoded tokens")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    parser.add_argument("--ctx", type=int, default=256, help="context (KV cache) length")
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.model, args.prompt, args.decode, args.threads, args.ctx)))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
