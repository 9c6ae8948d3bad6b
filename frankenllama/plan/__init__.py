"""A plan from the config alone: per-stage memory, FLOPs and time before any weight is read.

``plan(model, devices)`` builds the model on the meta device, places it over the devices as
accelerate's ``device_map="auto"`` would, and estimates every stage of the workbook — similarity
pass, one-block-out ablation scan, SLEB greedy search, swap search, healing (cached teacher targets
or teacher co-located) and zero-shot evaluation. Formulas and their assumptions: ``shapes`` (FLOPs),
``stages`` (memory), ``pipeline`` and ``healing`` (per-stage workloads), ``devices`` (throughputs).
The command line: ``python -m frankenllama plan --model CONFIG_OR_FOLDER --devices 2xH100-80GB``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from frankenllama.plan.devices import DeviceSpec, DeviceSpecError, parse_devices
from frankenllama.plan.healing import healing_rows
from frankenllama.plan.pipeline import ablation_scan, evaluation, similarity_pass, sleb_search, swap_search
from frankenllama.plan.placement import Placement
from frankenllama.plan.shapes import ModelShape, meta_model, model_shape
from frankenllama.plan.stages import Planner, Settings, StageEstimate

__all__ = ["DeviceSpec", "DeviceSpecError", "ModelShape", "Plan", "Settings", "StageEstimate", "meta_model",
           "model_shape", "parse_devices", "plan"]


@dataclass(frozen=True)
class Plan:
    model: str
    shape: ModelShape
    devices: DeviceSpec
    dtype: torch.dtype
    settings: Settings
    placement: Placement  # of the unpruned model's weights
    stages: list[StageEstimate]


def compute_dtype(devices: DeviceSpec) -> torch.dtype:
    """float32 on the CPU, bfloat16 on accelerators: ``frankenllama.models.resolve_dtype("auto")``."""
    from frankenllama.models import resolve_dtype

    return resolve_dtype("auto", torch.device("cpu" if devices.is_cpu else "meta"))


def plan(model: str, devices: DeviceSpec | str = "cpu", settings: Settings | None = None) -> Plan:
    """Every stage's estimate for ``model`` (config.json, folder or cached registry name) on ``devices``."""
    devices = parse_devices(devices) if isinstance(devices, str) else devices
    settings = settings or Settings.from_profile()
    skeleton = meta_model(model)
    shape = model_shape(skeleton)
    dtype = compute_dtype(devices)
    planner = Planner(skeleton, shape, devices, dtype)
    rows = [similarity_pass(planner, settings), ablation_scan(planner, settings), sleb_search(planner, settings),
            swap_search(planner, settings), *healing_rows(planner, settings), evaluation(planner, settings)]
    return Plan(str(model), shape, devices, dtype, settings, planner.placement(shape.num_layers), rows)
