"""Bench: notebook 05's linear patches fitted each on its own against all sharing one ``TeacherStreams``.

The six fits of notebook 05's default profile (ReplaceMe's angular-block-all cut and the recipe's part-swap cut at
k = 3, 6, 9 of SmolLM2's 30 blocks; the cuts read from figures/pruning_curve.csv) on its 32k wiki-leads calibration
tokens (256 x 128). Prints each fit's seconds both ways, the ratio of the totals, and checks that the patched
weights are bit-identical. One run, one after the other on the same machine: a ratio, not a timed assertion.

    python bench/patch_streams.py
"""
import csv
import time

import torch

from frankenllama.healing import TeacherStreams, linear_patch
from frankenllama.healing.patch import patchable_layers
from frankenllama.stages.common import shared_model
from frankenllama.stages.profiles import build
from frankenllama.sublayer import prune_sublayers
from frankenllama.surgery import drop_layers

torch.set_num_threads(2)
teacher, tok = shared_model("smollm2-135m")
calib = build("default").recipe.healing.data("calib").blocks(tok, teacher)
rows = {(r["strategy"], int(r["k"])): r for r in csv.DictReader(open("figures/pruning_curve.csv"))}


def student(strategy: str, k: int):
    units = [int(u) for u in rows[(strategy, k)]["units"].split()]
    return drop_layers(teacher, units) if strategy == "angular-block-all" else prune_sublayers(teacher, units)


cuts = [(s, k) for k in (3, 6, 9) for s in ("angular-block-all", "part-swap")]  # notebook 05's order: k, then pipeline
streams, times = TeacherStreams(), {}
for way in ("alone", "shared"):
    for s, k in cuts:
        model = student(s, k)
        started = time.perf_counter()
        fits = linear_patch(model, teacher, calib, patchable_layers(model), streams=streams if way == "shared" else None)
        folded = {n: w.detach().clone() for n, w in model.named_parameters() if n.endswith(("down_proj.weight", "o_proj.weight"))}
        times[way, s, k] = (time.perf_counter() - started, fits, folded)
        del model
total = {way: sum(times[way, s, k][0] for s, k in cuts) for way in ("alone", "shared")}
for s, k in cuts:
    (a, fa, ma), (b, fb, mb) = times["alone", s, k], times["shared", s, k]
    same = fa == fb and all(torch.equal(ma[n], mb[n]) for n in ma)
    print(f"{s:18s} k={k}  runs {len(fa)}  alone {a:6.1f} s  shared {b:6.1f} s  bit-identical {same}")
print(f"total: alone {total['alone']:.1f} s, shared {total['shared']:.1f} s (the first shared fit computes the streams): "
      f"{total['alone'] / total['shared']:.2f}x")
