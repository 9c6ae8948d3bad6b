"""``python -m frankenllama plan``: print the plan as a table (or JSON), and the verb's parser."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from frankenllama.cli import HelpFormatter, UsageError
from frankenllama.plan.devices import DeviceSpecError, parse_devices
from frankenllama.plan.healing import ADAPTERS, recipe_steps
from frankenllama.plan.stages import Settings

GB = 1e9


def _device_name(key, offload: bool = True) -> str:
    if key == "cpu":
        return "cpu (offload)" if offload else "cpu"
    return f"cuda:{key}" if isinstance(key, int) else str(key)


def _flops(x: float) -> str:
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def table(p) -> str:
    """The plan as plain text: a header (model, devices, placement) and one row per stage."""
    s = p.shape
    lines = [
        f"model   {p.model}: {s.num_layers} blocks, hidden {s.hidden}, {s.params / 1e9:.3g} B parameters"
        f"{' (tied embeddings)' if s.tied else ''}; computes in {str(p.dtype).removeprefix('torch.')}",
        f"devices {p.devices.describe()}",
        "weights " + ", ".join(f"{_device_name(d, not p.devices.is_cpu)} {w / GB:.2f} GB ({p.placement.layers.get(d, 0)} blocks)"
                               for d, w in p.placement.weights.items()),
        "",
    ]
    keys = sorted({k for r in p.stages for k in r.memory}, key=lambda k: (isinstance(k, str), str(k)))
    head = f"{'stage':<20} {'workload':<44} " + " ".join(f"{_device_name(k, not p.devices.is_cpu):>13}" for k in keys)
    head += f" {'host':>8} {'fwd FLOPs':>10} {'bwd FLOPs':>10} {'time':>12}  fits"
    lines += [head, "-" * len(head)]
    for r in p.stages:
        mem = " ".join(f"{r.memory.get(k, 0) / GB:>10.2f} GB" for k in keys)
        fits = "yes" if r.fits else "NO"
        fits += " (offloaded)" if r.offloaded else ""
        time = ("<= " if r.upper_bound else "") + _seconds(r.seconds)
        lines.append(f"{r.name:<20} {r.what:<44} {mem} {r.host / GB:>5.2f} GB {_flops(r.forward_flops):>10} "
                     f"{_flops(r.backward_flops):>10} {time:>12}  {fits}")
    total = f"{'total':<20} {'every row but the co-located teacher':<44}".ljust(head.rindex("time") + 4 - 12)
    bound = "<= " if any(r.upper_bound for r in p.stages) else ""
    lines += ["-" * len(head), f"{total}{bound + _seconds(total_seconds(p)):>12}"]
    lines += ["", "<= : an upper bound (a search's every trial run to the end; the exact bound abandons most of them; "
              "the linear patch's passes over the whole model)",
              f"memory: peak per device (weights + activations + cached streams + optimizer/LoRA state + KV), "
              f"GB = 1e9 bytes, capacity {p.devices.memory_bytes / GB:.1f} GB each; time at "
              f"{p.devices.tflops:g} TFLOP/s on one device at a time (device_map runs blocks in sequence)"]
    return "\n".join(lines)


def total_seconds(p) -> float:
    """The whole run's time: every row but the co-located teacher's, the alternative to the cached targets."""
    return sum(r.seconds for r in p.stages if not r.alternative)


def as_json(p) -> str:
    stages = [dict(dataclasses.asdict(r), memory={str(k): v for k, v in r.memory.items()}, fits=r.fits)
              for r in p.stages]
    return json.dumps({"model": p.model, "shape": dataclasses.asdict(p.shape), "devices": dataclasses.asdict(p.devices),
                       "dtype": str(p.dtype), "settings": dataclasses.asdict(p.settings),
                       "placement": {str(k): v for k, v in p.placement.weights.items()}, "stages": stages,
                       "total_seconds": total_seconds(p)}, indent=2)


def settings_from(args: argparse.Namespace) -> Settings:
    """The workload of every stage from the options: compress's run at ``--target`` (``Settings.from_compress``),
    else the notebooks' stages (``Settings.from_profile``), each of ``--profile``; single options override."""
    if args.target is not None and args.k is not None:
        raise UsageError("--k and --target both set how much is removed; give one (--target plans compress's run)")
    base = Settings.from_compress(args.profile) if args.target is not None else Settings.from_profile(args.profile)
    for name in ("calib_tokens", "score_tokens", "tokens", "eval_tokens", "block_len", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    fields = {"calib_tokens": args.calib_tokens, "score_tokens": args.score_tokens, "heal_tokens": args.tokens,
              "eval_tokens": args.eval_tokens, "k": args.k, "recipe": args.heal}
    if args.target is not None:  # compress's run, under compress's own flags: --calib-tokens is the linear patch's
        if args.heal is not None and args.heal != base.recipe:
            raise UsageError(f"--heal {args.heal}: with --target the plan is compress's run, which heals with "
                             f"{base.recipe}; leave --heal out, or drop --target to plan the notebooks' stages")
        fields["patch_tokens"] = fields.pop("calib_tokens")
    if args.block_len is not None:
        fields.update(calib_block_len=args.block_len, score_block_len=args.block_len, heal_block_len=args.block_len,
                      eval_block_len=args.block_len)
    if args.batch_size is not None:
        fields.update(calib_batch=args.batch_size, score_batch=args.batch_size, heal_batch=args.batch_size,
                      eval_batch=args.batch_size)
    return dataclasses.replace(base, **{k: v for k, v in fields.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    from frankenllama.compress.target import TargetError
    from frankenllama.models import UnsupportedModelError
    from frankenllama.plan import meta_model, plan, removed_blocks

    try:
        devices = parse_devices(args.devices, args.throughput)
    except DeviceSpecError as err:
        raise UsageError(str(err)) from None
    settings, skeleton = settings_from(args), None
    if args.target is not None:  # the blocks it removes, before any output: a target the model meets fails here
        try:
            skeleton = meta_model(args.model)
            settings = dataclasses.replace(settings, k=removed_blocks(args.target, skeleton))
        except (UnsupportedModelError, TargetError) as err:
            raise UsageError(str(err)) from None
    what = (f"compress --target {args.target} --profile {args.profile}" if args.target
            else f"the notebooks' stages ({args.profile} profile)")
    print(f"planning {what} for {args.model} on {devices.describe()} (meta device, no weights read)", file=sys.stderr)
    try:
        result = plan(args.model, devices, settings, skeleton=skeleton)
    except (UnsupportedModelError, TargetError) as err:
        raise UsageError(str(err)) from None
    if settings.k is not None and not 1 <= settings.k < result.shape.num_layers:
        raise UsageError(f"--k {settings.k}: must remove between 1 and {result.shape.num_layers - 1} blocks")
    print(as_json(result) if args.json else table(result))
    return 0


def _recipe(text: str) -> str:
    try:
        recipe_steps(text)
        return text
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_parser(sub) -> None:
    """Register the ``plan`` verb."""
    d = Settings.from_profile()
    parser = sub.add_parser("plan", help="per-stage memory, FLOPs and time of a model from its config alone",
                            description="Estimate, from the model's config alone (no weight is read), the memory, "
                                        "FLOPs and time of each stage of compressing it on DEVICES. With --target: "
                                        "the run of `compress --target T` (part-swap's searches, the linear patch, "
                                        "distillation, the report's evaluation of both models). Without: the stages "
                                        "of notebooks 01-04 (similarity pass, ablation scan, greedy searches, "
                                        "healing, zero-shot evaluation). Values in brackets are the notebooks' "
                                        "default profile's.",
                            formatter_class=HelpFormatter)
    parser.add_argument("--model", required=True, help="config.json, a folder holding one, or a cached registry name")
    parser.add_argument("--target", default=None,
                        help="plan `compress --target T` (0.8, 110M, 200MB@bf16 or 24L): its profile's budgets and "
                             "the blocks' worth the target removes")
    parser.add_argument("--profile", default="default", choices=("default", "thesis", "smoke"),
                        help="whose budgets: compress's (with --target) or the notebooks' profile")
    parser.add_argument("--devices", default="cpu", help="device spec: cpu, cpu-64GB, A100-40GB, 2xH100-80GB, 4x24GB")
    parser.add_argument("--throughput", type=float, default=None,
                        help="sustained TFLOP/s per device (default: per device kind, see frankenllama.plan.devices)")
    parser.add_argument("--calib-tokens", type=int, default=None,
                        help=f"similarity pass tokens [{d.calib_tokens}]; with --target, as compress's --calib-tokens: "
                             "the linear patch's calibration tokens")
    parser.add_argument("--score-tokens", type=int, default=None,
                        help=f"ablation scan and search calibration tokens [{d.score_tokens}]")
    parser.add_argument("--block-len", type=int, default=None,
                        help=f"tokens per block, every stage [similarity {d.calib_block_len}, scoring "
                             f"{d.score_block_len}, healing/eval {d.heal_block_len}]")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"blocks per batch, every stage [similarity {d.calib_batch}, others {d.score_batch}]")
    parser.add_argument("--k", type=int, default=None,
                        help="blocks to remove [20%% of the blocks]; not with --target, which sets it")
    parser.add_argument("--heal", default=None, type=_recipe,
                        help=f"healing recipe ({', '.join(sorted(ADAPTERS))}) or a composition joined by '+', "
                             f"e.g. linear-patch+kd-lora [{d.recipe}; with --target compress's]")
    parser.add_argument("--tokens", type=int, default=None, help=f"healing token budget [{d.heal_tokens}]")
    parser.add_argument("--eval-tokens", type=int, default=None, help=f"zero-shot evaluation tokens [{d.eval_tokens}]")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.set_defaults(run=run)
