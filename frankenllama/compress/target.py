"""The size target of ``compress``, as the user types it, and the ``Budget`` it means for a model.

Four forms (``parse_target``):

* a fraction of the parameters, ``"0.8"`` (a number with a decimal point, in (0, 1]);
* a parameter count, ``"110M"``, ``"1.2B"``, ``"500k"`` or a plain integer ``"110000000"``;
* bytes of parameters at a dtype, ``"200MB@bf16"``, ``"1GiB@f16"`` (sizes as
  ``frankenllama.export.budget.parse_bytes`` reads them, SI and binary units; dtypes ``bf16``,
  ``f16``/``fp16``, ``f32``/``fp32``, ``int8`` or any torch dtype name);
* a number of blocks to keep, ``"24L"``.

Parameters are counted as ``frankenllama.budget`` counts them (shared tensors once, so SmolLM2's
tied embedding is one matrix). ``Target.budget`` turns a target into the ``Budget`` that
``fit_budget`` takes, and refuses up front — before any scoring — a target the model already meets
and one that would remove every block.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from frankenllama.budget import Budget, count_params, unit_params
from frankenllama.export.budget import parse_bytes
from frankenllama.models import num_layers
from frankenllama.stages.pruning import _layer_budget

_COUNT_UNITS = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
DTYPE_ALIASES = {"bf16": "bfloat16", "f16": "float16", "fp16": "float16", "half": "float16",
                 "f32": "float32", "fp32": "float32", "i8": "int8", "int8": "int8"}  # fmt: skip
FORMS = "a fraction of the parameters (0.8), a parameter count (110M, 1.2B), bytes at a dtype (200MB@bf16) or a block count (24L)"


class TargetError(ValueError):
    """A target that cannot be read, or that no pruning of this model meets."""


@dataclass(frozen=True)
class Target:
    """A parsed size target: ``kind`` is ``"fraction"``, ``"params"``, ``"bytes"`` or ``"layers"``."""

    text: str
    kind: str
    value: float | int
    dtype: str | None = None  # torch dtype name of a "bytes" target

    def describe(self) -> str:
        return {"fraction": f"{self.value:g} of the parameters", "params": f"at most {self.value:,} parameters",
                "bytes": f"at most {self.value:,} bytes of parameters at {self.dtype}",
                "layers": f"{self.value} blocks kept"}[self.kind]  # fmt: skip

    def budget(self, model: nn.Module, granularity: str) -> Budget:
        """The ``Budget`` of this target for ``model`` at a strategy's ``granularity`` (``"layer"``/``"sublayer"``).

        A block count is a ``layer_fraction`` budget for block strategies and, for sub-block
        strategies, the parameter count of the model with that many (equal-sized) blocks kept, as
        the pruning stage compares them. Raises ``TargetError`` for a target the model already
        meets or one that would remove every block.
        """
        total, L = count_params(model), num_layers(model)
        if self.kind == "layers":
            keep = int(self.value)
            if keep >= L:
                raise TargetError(f"target {self.text}: the model has {L} blocks, already within it; "
                                  f"give fewer blocks (e.g. {max(1, L - L // 5)}L) or another form")
            if keep < 1:
                raise TargetError(f"target {self.text} would remove every block; keep at least 1 (e.g. 1L)")
            if granularity == "layer":
                return Budget(layer_fraction=keep / L)
            return _layer_budget(total, unit_params(model, "layer"), L - keep)
        if self.kind == "fraction":
            budget = Budget(params=max(1, math.floor(self.value * total)))
        elif self.kind == "params":
            budget = Budget(params=int(self.value))
        else:
            budget = Budget(bytes=int(self.value), dtype=str(self.dtype))
        limit = budget.param_limit()
        assert limit is not None
        if limit >= total:
            raise TargetError(f"target {self.text}: the model has {total:,} parameters ({total * budget.itemsize:,} bytes "
                              f"at {budget.dtype}), already within it; give a smaller target, e.g. 0.8")
        blocks = unit_params(model, "layer")
        floor = total - int(blocks.sum() - blocks.min())  # embeddings, head, norms and a single block
        if limit < floor:
            raise TargetError(f"target {self.text} would remove every block: even one block kept leaves {floor:,} "
                              f"parameters (embeddings, head and norms stay); give a target of at least {floor:,} parameters")
        return budget


def _dtype(name: str, text: str) -> str:
    dtype = DTYPE_ALIASES.get(name.lower(), name)
    if not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise TargetError(f"cannot read target {text!r}: unknown dtype {name!r}; use bf16, f16, f32 or int8")
    return dtype


def parse_target(text: str) -> Target:
    """Read a size target typed by the user (see the module docstring); ``TargetError`` names the forms."""
    raw = str(text).strip()
    if "@" in raw:
        size, _, dtype = raw.partition("@")
        try:
            nbytes = parse_bytes(size)
        except ValueError:
            raise TargetError(f"cannot read target {text!r}: {size!r} is not a size; write e.g. 200MB@bf16") from None
        if nbytes < 1:
            raise TargetError(f"target {text!r} is zero bytes; give a positive size, e.g. 200MB@bf16")
        return Target(raw, "bytes", nbytes, _dtype(dtype.strip(), text))
    layers = re.fullmatch(r"(\d+)\s*[lL]", raw)
    if layers:
        return Target(raw, "layers", int(layers.group(1)))
    fraction = re.fullmatch(r"\d*\.\d+|\d+\.", raw)
    if fraction:
        value = float(raw)
        if not 0 < value <= 1:
            raise TargetError(f"target {text!r}: a fraction of the parameters must be in (0, 1]; "
                              "for a parameter count write e.g. 110M")
        return Target(raw, "fraction", value)
    count = re.fullmatch(r"(\d*\.?\d+)\s*([a-zA-Z]?)", raw)
    if count and count.group(2).lower() in _COUNT_UNITS:
        value = int(round(float(count.group(1)) * _COUNT_UNITS[count.group(2).lower()]))
        if value < 1:
            raise TargetError(f"target {text!r} is zero parameters; give e.g. 110M")
        return Target(raw, "params", value)
    raise TargetError(f"cannot read target {text!r}: give {FORMS}")
