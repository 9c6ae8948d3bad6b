"""A plan from the config alone: per-stage memory, FLOPs and time before any weight is read.

``plan(model, devices)`` builds the model on the meta device, places it over the devices as
accelerate's ``device_map="auto"`` would, and estimates every stage of the workbook — similarity
pass, one-block-out ablation scan, SLEB greedy search, swap search, healing (cached teacher targets
or teacher co-located) and zero-shot evaluation — or, with ``Settings.from_compress()`` and a
``target``, of ``compress``'s run (the sub-block scan and part-swap besides, the linear patch on
its own calibration tokens, and the evaluation of both the original and the compressed model).
Formulas and their assumptions: ``shapes`` (FLOPs), ``stages`` (memory), ``pipeline`` and
``healing`` (per-stage workloads), ``devices`` (throughputs). The command line:
``python -m frankenllama plan --model CONFIG_OR_FOLDER --devices 2xH100-80GB [--target 0.8]``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from frankenllama.plan.devices import DeviceSpec, DeviceSpecError, parse_devices
from frankenllama.plan.healing import healing_rows
from frankenllama.plan.pipeline import (ablation_scan, compress_evaluation, evaluation, part_swap, similarity_pass,
                                        sleb_search, sublayer_scan, swap_search)
from frankenllama.plan.placement import Placement
from frankenllama.plan.shapes import ModelShape, meta_model, model_shape
from frankenllama.plan.stages import Planner, Settings, StageEstimate

__all__ = ["DeviceSpec", "DeviceSpecError", "ModelShape", "Plan", "Settings", "StageEstimate", "meta_model",
           "model_shape", "parse_devices", "plan", "removed_blocks"]


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


def removed_blocks(target: str, skeleton) -> int:
    """Blocks' worth of parameters that ``compress --target target`` removes from ``skeleton`` (a meta model):
    the fewest whole blocks whose parameters bring the model within the target (``TargetError`` for a target
    the model already meets or one that removes every block)."""
    from frankenllama.budget import count_params, unit_params
    from frankenllama.compress.target import parse_target

    limit = parse_target(target).budget(skeleton, "sublayer").param_limit()
    assert limit is not None
    blocks = unit_params(skeleton, "layer")
    return max(1, math.ceil((count_params(skeleton) - limit) / float(blocks.mean())))


def plan(model: str, devices: DeviceSpec | str = "cpu", settings: Settings | None = None,
         target: str | None = None, skeleton: nn.Module | None = None) -> Plan:
    """Every stage's estimate for ``model`` (config.json, folder or cached registry name) on ``devices``.

    ``target``: a size target as ``compress`` takes it; it sets the blocks removed (``settings.k``).
    ``skeleton``: ``meta_model(model)`` where the caller has already built it.
    """
    devices = parse_devices(devices) if isinstance(devices, str) else devices
    settings = settings or Settings.from_profile()
    skeleton = meta_model(model) if skeleton is None else skeleton
    if target is not None:
        settings = dataclasses.replace(settings, k=removed_blocks(target, skeleton))
    shape = model_shape(skeleton)
    dtype = compute_dtype(devices)
    planner = Planner(skeleton, shape, devices, dtype)
    compress = settings.workload == "compress"  # part-swap's searches, the recipe, both models evaluated
    parts = compress and settings.part_rounds > 0
    rows = [similarity_pass(planner, settings), ablation_scan(planner, settings),
            *([sublayer_scan(planner, settings)] if parts else []), sleb_search(planner, settings),
            swap_search(planner, settings), *([part_swap(planner, settings)] if parts else []),
            *healing_rows(planner, settings), (compress_evaluation if compress else evaluation)(planner, settings)]
    return Plan(str(model), shape, devices, dtype, settings, planner.placement(shape.num_layers), rows)
