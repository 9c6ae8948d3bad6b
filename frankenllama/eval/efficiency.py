"""What a pruned model gains: size, memory and speed, measured side by side with its original.

* **Size** — parameters (tied tensors counted once) and bytes on disk at fp32 and bf16, computed as
  ``Σ numel × element size`` over the unique tensors (what ``save_pretrained`` writes, less a few
  kB of safetensors header).
* **Peak memory** — weights plus the peak extra memory of a prefill of ``(batch, prompt_len)``
  tokens with a KV cache: ``torch.cuda.max_memory_allocated`` on a GPU; on CPU the peak resident set
  size sampled every millisecond by a background thread, minus the resident size before the call.
* **Throughput** — prefill tokens/s (one forward pass over ``batch × prompt_len`` tokens, logits
  only for the last position, as generation does) and decode tokens/s (greedy steps after the
  prefill, ``batch`` tokens a step), at batch 1 and 8.

Depth pruning removes ``k`` of ``L`` blocks, so the **ideal speed-up** is ``L / (L - k)`` (Gromov
et al. 2024, arXiv:2403.17887; Men et al. 2024, arXiv:2403.03853): everything outside the blocks —
embedding, final norm, LM head, the generation loop — is not made faster and pulls the measured
speed-up below the ideal. Prefill is dominated by the blocks. Decode at batch 1 reads every weight
once per token: for SmolLM2-135M the 28 M-parameter tied LM head is ~21 % of the weights, which
alone caps the 30→24-block speed-up at ≈ 0.95 × ideal.

Measurements of the models being compared are **interleaved** (A, B, B, A, …) in one run, so that
load from other processes on a shared machine hits both alike, and summarised by the minimum (or
median) over repetitions; decode is timed per step, so one run gives ``new_tokens`` samples. Decoding runs either through ``model.generate`` or through a minimal greedy loop (``decode``
= ``"generate"`` / ``"loop"``), with a dynamic or static (pre-allocated) KV cache.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
from torch import nn

from frankenllama.models import decoder_layers, model_device

DecodeImpl = Literal["generate", "loop"]
CacheImpl = Literal["dynamic", "static"]
Statistic = Literal["min", "median"]


@dataclass(frozen=True)
class SpeedConfig:
    """How throughput is measured; validated on construction.

    Attributes:
        batch_sizes: batch sizes at which prefill and decode are timed.
        prompt_len: prompt tokens per sequence (prefill length).
        new_tokens: greedy decode steps timed after the prefill.
        repeats: interleaved repetitions; ``statistic`` summarises all timings of a model.
        warmup: untimed runs of every measurement before the timed ones.
        decode: ``"generate"`` (``model.generate``) or ``"loop"`` (a minimal greedy loop).
        cache: ``"dynamic"`` (grows each step) or ``"static"`` (pre-allocated) KV cache.
        seed: seed of the random prompt tokens.
        threads: torch CPU threads while timing (``None``: leave as is). On a machine whose cores
            are shared with other jobs, 1 thread is far steadier: each op of a 135M model is tiny,
            and with 2 threads every op waits at an OpenMP barrier for a thread that may be
            descheduled (we measured 80 ms vs 330 ms per decode step under load).
        statistic: ``"min"`` (default: load from other processes only ever adds time, so the
            fastest of many runs is the steadiest estimate, as ``timeit`` argues) or ``"median"``.
    """

    batch_sizes: tuple[int, ...] = (1, 8)
    prompt_len: int = 128
    new_tokens: int = 32
    repeats: int = 5
    warmup: int = 1
    decode: DecodeImpl = "generate"
    cache: CacheImpl = "dynamic"
    seed: int = 0
    threads: int | None = None
    statistic: Statistic = "min"

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_sizes", tuple(self.batch_sizes))
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be positive integers, got {self.batch_sizes}")
        for name in ("prompt_len", "new_tokens", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.new_tokens < 2:
            raise ValueError("new_tokens must be at least 2 (the first token comes from the prefill)")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.decode not in ("generate", "loop"):
            raise ValueError(f"decode must be 'generate' or 'loop', got {self.decode!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be positive or None, got {self.threads}")
        if self.statistic not in ("min", "median"):
            raise ValueError(f"statistic must be 'min' or 'median', got {self.statistic!r}")
        if self.cache not in ("dynamic", "static"):
            raise ValueError(f"cache must be 'dynamic' or 'static', got {self.cache!r}")


# --------------------------------------------------------------------------------------------------
# size


def _unique_parameters(model: nn.Module) -> list[torch.Tensor]:
    seen, out = set(), []
    for p in model.parameters():  # parameters() already skips tied duplicates; data_ptr guards the rest
        key = (p.data_ptr(), p.numel())
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def count_parameters(model: nn.Module) -> int:
    """Number of parameters, tied tensors (e.g. input/output embeddings) counted once."""
    return sum(p.numel() for p in _unique_parameters(model))


def block_parameters(model: nn.Module) -> int:
    """Parameters inside the decoder blocks (what depth pruning removes)."""
    return sum(p.numel() for p in decoder_layers(model).parameters())


def bytes_on_disk(model: nn.Module, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of the weights saved in ``dtype`` (``Σ numel × itemsize`` over unique tensors)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return count_parameters(model) * itemsize


def weight_bytes(model: nn.Module) -> int:
    """Bytes the weights take in memory now, in their current dtypes."""
    return sum(p.numel() * p.element_size() for p in _unique_parameters(model))


def ideal_speedup(reference_layers: int, layers: int) -> float:
    """``L / (L - k)``: the speed-up if all time were spent in the decoder blocks."""
    if layers < 1 or reference_layers < 1:
        raise ValueError(f"layer counts must be positive, got {reference_layers} and {layers}")
    return reference_layers / layers


# --------------------------------------------------------------------------------------------------
# memory


class _RssSampler:
    """Peak resident set size of this process, sampled every ``interval`` seconds in a thread."""

    def __init__(self, interval: float = 0.001) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.start_rss = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


@torch.inference_mode()
def peak_memory(model: nn.Module, batch: int = 8, prompt_len: int = 128, seed: int = 0) -> int:
    """Weights plus the peak extra bytes of a ``(batch, prompt_len)`` prefill that fills a KV cache."""
    device = model_device(model)
    ids = _random_ids(model, batch, prompt_len, seed).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        model(ids, use_cache=True, logits_to_keep=1)
        torch.cuda.synchronize(device)
        return weight_bytes(model) + torch.cuda.max_memory_allocated(device) - base
    with _RssSampler() as sampler:
        model(ids, use_cache=True, logits_to_keep=1)
    return weight_bytes(model) + max(0, sampler.peak - sampler.start_rss)


# --------------------------------------------------------------------------------------------------
# speed


def _random_ids(model: nn.Module, batch: int, length: int, seed: int) -> torch.Tensor:
    vocab = model.get_input_embeddings().weight.shape[0]
    generator = torch.Generator().manual_seed(seed)
    # skip the lowest ids: special tokens would make some models stop or behave atypically
    return torch.randint(min(100, vocab - 1), vocab, (batch, length), generator=generator)  # (B, T)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def time_prefill(model: nn.Module, ids: torch.Tensor) -> float:
    """Seconds of one forward pass over ``ids`` ``(B, T)`` (logits for the last position only)."""
    device = model_device(model)
    ids = ids.to(device)
    _sync(device)
    start = time.perf_counter()
    model(ids, use_cache=False, logits_to_keep=1)
    _sync(device)
    return time.perf_counter() - start


def _make_cache(model: nn.Module, kind: CacheImpl, max_len: int):
    from transformers import DynamicCache, StaticCache

    if kind == "static":
        return StaticCache(config=model.config, max_cache_len=max_len)
    return DynamicCache(config=model.config)


class _StepClock:
    """A logits processor that only records when ``generate`` reaches each step."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        _sync(scores.device)
        self.stamps.append(time.perf_counter())
        return scores


@torch.inference_mode()
def time_decode(
    model: nn.Module, ids: torch.Tensor, new_tokens: int, decode: DecodeImpl = "generate", cache: CacheImpl = "dynamic"
) -> list[float]:
    """Seconds of each greedy decode step (``B`` tokens a step) after a prefill of ``ids`` ``(B, T)``.

    ``"generate"`` stamps the time at every step of ``model.generate`` with a logits processor, so a
    step includes generate's own per-step work (logits processing, stopping criteria, cache
    bookkeeping); ``"loop"`` times bare single-token forward passes plus an argmax.
    """
    from transformers import LogitsProcessorList

    device = model_device(model)
    ids = ids.to(device)
    batch, length = ids.shape
    if decode == "generate":
        clock = _StepClock()
        pad = getattr(model.generation_config, "pad_token_id", None)
        model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens + 1,
            min_new_tokens=new_tokens + 1,
            do_sample=False,
            pad_token_id=0 if pad is None else pad,
            cache_implementation=cache,
            logits_processor=LogitsProcessorList([clock]),
        )
        return [b - a for a, b in zip(clock.stamps, clock.stamps[1:])]
    kv = _make_cache(model, cache, length + new_tokens + 1)
    out = model(ids, cache=kv, use_cache=True, logits_to_keep=1, cache_position=torch.arange(length, device=device))
    token = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
    steps = []
    for step in range(new_tokens):
        position = torch.tensor([length + step], device=device)
        _sync(device)
        start = time.perf_counter()
        out = model(token, cache=kv, use_cache=True, cache_position=position)
        token = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        _sync(device)
        steps.append(time.perf_counter() - start)
    return steps


def _interleaved(
    fns: Mapping[str, Callable[[], list[float]]], repeats: int, warmup: int, statistic: Statistic
) -> dict[str, float]:
    """Summary of all timings of each function, alternating the models' order every repetition."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else reversed(names):
            times[name].extend(fns[name]())
    summary = min if statistic == "min" else statistics.median
    return {n: summary(t) for n, t in times.items()}


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def compute_shape(model: nn.Module) -> tuple:
    """What a forward pass's cost depends on: the model class and every parameter's name, shape and dtype.

    Two models with the same compute shape (a pruned model and its healed variants, whose LoRA
    adapters and linear patches are merged into existing weights) run the same kernels on the same
    sizes: timing one of them times both.
    """
    return (type(model).__name__, *((n, tuple(p.shape), p.dtype, p.device.type) for n, p in model.named_parameters()))


def measure_speed(models: Mapping[str, nn.Module], config: SpeedConfig = SpeedConfig()) -> pd.DataFrame:
    """Prefill and decode tokens/s of every model, measured interleaved in one run.

    Models of the same ``compute_shape`` are timed once, through the first of them (column
    ``timed_as`` names it). Returns one row per model with ``prefill_tps_b{B}`` and
    ``decode_tps_b{B}`` for each batch size.
    """
    timed_as: dict[str, str] = {}
    first: dict[tuple, str] = {}
    for name, model in models.items():
        timed_as[name] = first.setdefault(compute_shape(model), name)
    timed = {name: models[name] for name in dict.fromkeys(timed_as.values())}
    rows: dict[str, dict[str, float]] = {name: {} for name in timed}
    reference = next(iter(models.values()))
    with _threads(config.threads):
        for batch in config.batch_sizes:
            ids = _random_ids(reference, batch, config.prompt_len, config.seed)
            prefill = _interleaved(
                {n: (lambda m=m: [time_prefill(m, ids)]) for n, m in timed.items()},
                config.repeats, config.warmup, config.statistic,
            )  # fmt: skip
            decode = _interleaved(
                {n: (lambda m=m: time_decode(m, ids, config.new_tokens, config.decode, config.cache)) for n, m in timed.items()},
                config.repeats, config.warmup, config.statistic,
            )  # fmt: skip
            for name in timed:
                rows[name][f"prefill_tps_b{batch}"] = batch * config.prompt_len / prefill[name]
                rows[name][f"decode_tps_b{batch}"] = batch / decode[name]
    table = pd.DataFrame.from_dict({name: rows[timed_as[name]] for name in models}, orient="index")
    return table.assign(timed_as=[timed_as[name] for name in models])


def size_table(models: Mapping[str, nn.Module], memory_batch: int = 8, prompt_len: int = 128) -> pd.DataFrame:
    """Layers, parameters, bytes at fp32/bf16 and peak memory of every model (one row each)."""
    rows, peaks = {}, {}  # models of one compute shape have one peak (compute_shape)
    for name, model in models.items():
        shape = compute_shape(model)
        if shape not in peaks:
            peaks[shape] = peak_memory(model, memory_batch, prompt_len)
        rows[name] = {
            "layers": len(decoder_layers(model)),
            "params": count_parameters(model),
            "block_params": block_parameters(model),
            "bytes_fp32": bytes_on_disk(model, torch.float32),
            "bytes_bf16": bytes_on_disk(model, torch.bfloat16),
            "peak_memory": peaks[shape],
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def compare_efficiency(models: Mapping[str, nn.Module], config: SpeedConfig = SpeedConfig()) -> pd.DataFrame:
    """Size, memory and speed of every model side by side; the first model is the reference.

    Adds ``ideal_speedup`` (``L_ref / L``) and, per speed column, ``<col>_speedup`` (ratio to the
    reference) and ``<col>_vs_ideal`` (that ratio divided by the ideal).
    """
    if not models:
        raise ValueError("no models to compare")
    table = size_table(models, max(config.batch_sizes), config.prompt_len).join(measure_speed(models, config))
    ref = table.index[0]
    table["ideal_speedup"] = [ideal_speedup(int(table.loc[ref, "layers"]), int(n)) for n in table["layers"]]
    for col in [c for c in table.columns if c.startswith(("prefill_tps", "decode_tps"))]:
        table[f"{col}_speedup"] = table[col] / table.loc[ref, col]
        table[f"{col}_vs_ideal"] = table[f"{col}_speedup"] / table["ideal_speedup"]
    return table
