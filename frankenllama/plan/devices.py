"""Device specs for the plan: how many devices, how much memory each, and how fast they compute.

A spec reads ``[N x] KIND`` with an optional memory size: ``"2xH100-80GB"``, ``"A100-40GB"``,
``"4x24GB"`` (a generic 24 GB accelerator), ``"cpu"`` (this machine's RAM) or ``"cpu-64GB"``.
A size in a spec is read as vendors name GPU memory, in binary units: an "80GB" H100 holds 80 GiB
(85.9e9 bytes). The plan reports every amount in decimal GB (1e9 bytes), so such a device shows as
85.9 GB.

Throughput is the *sustained* dense matmul rate the time estimates divide by, not the datasheet peak:
the peak times a stated utilisation (``UTILISATION``; 40 % is what well-tuned bf16 training and
batched prefill reach on H100/A100, e.g. the MFU of Llama-3 pre-training, arXiv:2407.21783, ~38–43 %;
small batches of short blocks reach less). The CPU figure is this workbook's 2-core machine: the
README's measured notebook 01 (SmolLM2's similarity pass over 16k tokens, 3.6 TFLOP by this plan's
count) took 37 s on idle cores, ~0.1 TFLOP/s in float32; busy cores give a few times less
(``tests/test_plan.py`` prints the measured rate).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

UTILISATION = 0.4  # sustained / peak dense matmul rate assumed for accelerators

# kind -> (memory GB when the spec names none, peak dense bf16 TFLOP/s); None memory: must be given
ACCELERATORS: dict[str, tuple[float | None, float]] = {
    "H100": (80.0, 989.0),  # SXM, dense bf16 (no sparsity)
    "H200": (141.0, 989.0),
    "A100": (80.0, 312.0),
    "L40S": (48.0, 362.0),
    "A10G": (24.0, 70.0),
    "RTX4090": (24.0, 165.0),
    "GPU": (None, 100.0),  # a generic accelerator ("4x24GB"): a conservative peak
}
CPU_TFLOPS = 0.1  # float32 rate of this 2-core machine in the workbook's passes (see module doc)
GIB = 2**30

_SPEC = re.compile(r"^(?:(?P<n>\d+)\s*[x×*]\s*)?(?P<kind>[A-Za-z][A-Za-z0-9]*?)?(?:-?(?P<gb>\d+(?:\.\d+)?)\s*GB)?$", re.I)


class DeviceSpecError(ValueError):
    """A ``--devices`` string that cannot be read."""


@dataclass(frozen=True)
class DeviceSpec:
    """``count`` identical devices of ``kind`` with ``memory_bytes`` each and ``tflops`` sustained each."""

    kind: str  # "cpu" or an accelerator name
    count: int
    memory_bytes: float
    tflops: float  # sustained dense matmul rate per device, TFLOP/s

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

    @property
    def names(self) -> list[str | int]:
        """Device keys as accelerate's ``max_memory`` and ``device_map`` name them."""
        return ["cpu"] if self.is_cpu else list(range(self.count))

    def describe(self) -> str:
        rate = f"{self.tflops * 1e3:.0f} GFLOP/s" if self.tflops < 1 else f"{self.tflops:.0f} TFLOP/s"
        return f"{self.count} x {self.kind} ({self.memory_bytes / 1e9:.1f} GB, {rate} sustained each)"


def host_memory_bytes() -> float:
    """This machine's physical memory (bytes)."""
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def parse_devices(spec: str, tflops: float | None = None) -> DeviceSpec:
    """Read a device spec (see module doc); ``tflops`` overrides the default sustained rate per device."""
    text = spec.strip().replace(" ", "")
    kinds = {k.lower(): k for k in ACCELERATORS}
    match = _SPEC.match(text)
    if not text or match is None:
        raise DeviceSpecError(f"cannot read device spec {spec!r}; write e.g. 2xH100-80GB, A100-40GB, 4x24GB or cpu")
    count = int(match["n"] or 1)
    kind = (match["kind"] or "GPU").lower()
    if count < 1:
        raise DeviceSpecError(f"device spec {spec!r} asks for {count} devices; the count must be at least 1")
    if tflops is not None and tflops <= 0:
        raise DeviceSpecError(f"throughput must be positive, got {tflops} TFLOP/s")
    if kind == "cpu":
        if count != 1:
            raise DeviceSpecError(f"device spec {spec!r}: the plan models one CPU host; write cpu or cpu-64GB")
        memory = float(match["gb"]) * GIB if match["gb"] else host_memory_bytes()
        return DeviceSpec("cpu", 1, memory, tflops or CPU_TFLOPS)
    if kind not in kinds:
        raise DeviceSpecError(
            f"unknown device kind {match['kind']!r} in {spec!r}; known: cpu, {', '.join(sorted(ACCELERATORS))}, "
            "or a bare size such as 4x24GB")
    name = kinds[kind]
    default_gb, peak = ACCELERATORS[name]
    gb = float(match["gb"]) if match["gb"] else default_gb
    if gb is None or gb <= 0:
        raise DeviceSpecError(f"device spec {spec!r} names no memory size; write e.g. 4x24GB")
    return DeviceSpec(name, count, gb * GIB, tflops or peak * UTILISATION)
