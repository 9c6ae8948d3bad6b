"""Print the sub-block ids a strategy removes at k blocks' worth of parameters, on a profile's calibration.

The ids are what ``bench/zero_shot_recipe_probe.py --units`` takes (2l: block l's attention, 2l + 1:
its MLP), so a cut that notebook 02 does not run by default (``blockpruner``: BlockPruner's greedy
over sub-blocks, Zhong et al. 2024) can be healed and measured on the development items:

    python bench/budget_cut.py --strategy blockpruner --k 6

(a 26-step greedy over SmolLM2's 60 sub-blocks first, about 6 s a step on 2 idle cores; session 18).
"""

from __future__ import annotations

import argparse
import time

from frankenllama.budget import count_params, fit_budget, unit_params
from frankenllama.selection import get_strategy
from frankenllama.stages import scoring_context
from frankenllama.stages.profiles import build
from frankenllama.stages.pruning import _layer_budget  # notebook 02's budget of k blocks' worth, as compress uses it
from frankenllama.units import describe, layer_units

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--strategy", default="blockpruner")
p.add_argument("--k", type=int, default=6, help="blocks' worth of parameters removed")
p.add_argument("--profile", default="default", help="whose calibration blocks and search settings")
p.add_argument("--steps", type=int, default=26,
               help="run a greedy search this far at once first (each later extension starts with a full, unshortlisted step)")
a = p.parse_args()
t0 = time.time()
ctx = scoring_context(build(a.profile).pruning)
spec = get_strategy(a.strategy)
if spec.nested and a.steps:
    ctx.greedy(a.steps, spec.granularity)  # type: ignore[arg-type]
total = count_params(ctx.model)
fit = fit_budget(ctx, _layer_budget(total, unit_params(ctx.model, "layer"), a.k), a.strategy)
units = fit.removed if spec.granularity == "sublayer" else layer_units(fit.removed)
print(f"{a.strategy} at {a.k} blocks' worth: {describe(units)}; {fit.num_params / 1e6:.2f} M parameters "
      f"({total / 1e6:.2f} M before); {time.time() - t0:.0f} s")
print("--units", " ".join(map(str, units)))
