"""Where the weights go: accelerate's ``device_map`` over the planned devices, from the meta skeleton.

``device_map="auto"`` in ``from_pretrained`` first balances the weights over the GPUs
(``accelerate.utils.get_balanced_memory``: about total / n per device plus room for the largest
block) and then fills the devices in order with whole decoder blocks
(``accelerate.infer_auto_device_map`` with the model's ``_no_split_modules``). accelerate refuses to
balance over GPUs this machine does not have, so ``balanced_budget`` redoes that one step
(same rule) and ``infer_auto_device_map`` does the placement itself. What does not fit goes to
``"cpu"`` (offloaded: correct, but every forward copies those weights over PCIe).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from frankenllama.plan.devices import DeviceSpec
from frankenllama.plan.shapes import _quiet

USABLE = 0.95  # fraction of a GPU's memory the weights may take: the CUDA context and allocator need the rest


@dataclass(frozen=True)
class Placement:
    """Weights per device (bytes), the decoder blocks on each device, and where embedding and LM head sit."""

    weights: dict  # device key -> bytes of weights placed there (offloaded weights under "cpu")
    layers: dict  # device key -> number of decoder blocks there
    first: str | int  # device of the embedding (inputs, residual statistics)
    last: str | int  # device of the LM head (logits)


def truncated(skeleton: nn.Module, num_layers: int) -> nn.Module:
    """A meta copy of ``skeleton`` with only its first ``num_layers`` blocks (a pruned model's shape)."""
    small = copy.deepcopy(skeleton)
    small.model.layers = nn.ModuleList(list(small.model.layers)[:num_layers])
    small.config.num_hidden_layers = num_layers
    return small


def balanced_budget(sizes: dict[str, int], devices: DeviceSpec, block_bytes: int) -> dict:
    """Per-GPU ``max_memory`` as ``get_balanced_memory`` sets it: total / n + 1.25 × the largest block."""
    usable = devices.memory_bytes * USABLE
    per = min(usable, sizes[""] / devices.count + 1.25 * block_bytes)
    budget: dict = {i: int(per) for i in range(devices.count)}
    budget[devices.count - 1] = int(usable)  # as accelerate: the last GPU takes whatever is left
    budget["cpu"] = 10**15  # spill-over (offload) is reported, never refused
    return budget


def place(skeleton: nn.Module, devices: DeviceSpec, dtype: torch.dtype) -> Placement:
    """accelerate's placement of ``skeleton``'s weights in ``dtype`` over ``devices`` (see module doc)."""
    from accelerate import infer_auto_device_map
    from accelerate.utils import compute_module_sizes

    sizes = compute_module_sizes(skeleton, dtype=dtype)
    if devices.is_cpu:
        n = len(skeleton.model.layers)
        return Placement({"cpu": sizes[""]}, {"cpu": n}, "cpu", "cpu")
    no_split = list(getattr(skeleton, "_no_split_modules", None) or [])
    block_bytes = sizes["model.layers.0"]
    with _quiet("accelerate.utils.modeling"):
        device_map = infer_auto_device_map(
            skeleton, max_memory=balanced_budget(sizes, devices, block_bytes), no_split_module_classes=no_split, dtype=dtype)
    device_map = {name: "cpu" if device == "disk" else device for name, device in device_map.items()}
    weights: dict = {}
    for name, device in device_map.items():
        weights[device] = weights.get(device, 0) + sizes[name]
    layers: dict = {}
    for i in range(len(skeleton.model.layers)):
        device = _device_of(device_map, f"model.layers.{i}")
        layers[device] = layers.get(device, 0) + 1
    return Placement(weights, layers, _device_of(device_map, "model.embed_tokens"), _device_of(device_map, "lm_head"))


def _device_of(device_map: dict, module: str) -> str | int:
    """The device of ``module`` under a device_map that may name it or any module above it."""
    parts = module.split(".")
    for n in range(len(parts), -1, -1):
        name = ".".join(parts[:n])
        if name in device_map:
            return device_map[name]
    raise KeyError(f"device_map places no module above {module!r}")
