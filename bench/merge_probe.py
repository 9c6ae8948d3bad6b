"""Probe: does merging the removed run into a kept neighbour (LaCo's layer collapse) beat removing it?

LaCo (Yang et al. 2024, arXiv:2402.11187) collapses a run of blocks into the block beside it instead of
deleting them: ``θ_t ← θ_t + λ Σ_k (θ_k − θ_t)`` over the run's parameters ("reserving differences while
seeking common", λ = 1), so the kept block carries some of what the removed ones held; λ = 1 / (m + 1) is
the plain average of the m + 1 blocks (a mergekit ``linear`` merge). The recipe's cut (``PART_SWAP_20``)
deletes the run 14-18. On 2,048 tokens of wiki-leads ``calib`` (the KL probe's blocks) this measures the KL
to the original and the NLL of the cut with the run merged into block 19 (the block after it; attention,
MLP and norms) or into 13's attention (the block before the run, where LaCo collapses a run; 13's MLP is part
of the cut), at several λ, unhealed, against plain removal (λ = 0). One JSON line
each, and a summary line appended to results/merge_probe.jsonl. A merge worth healing must keep clearly
less KL than removal here, as the healing starts from it.

Session 26 (133 s on the AMD VM): none does. Removal has KL 0.753 (NLL 3.593); every merge is worse, and the
more so the larger λ: the best, 13's attention at λ = 0.1, 0.805; the plain average into block 19, 0.996;
LaCo's λ = 1, 9.5 (13's attention) to 23.8 (block 19).

    python bench/merge_probe.py
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch

from _development import PART_SWAP_20, kl_and_nll  # bench/_development.py
from frankenllama.stages.common import DataConfig, shared_model
from frankenllama.sublayer import prune_sublayers

RESULTS = Path(__file__).parent / "results" / "merge_probe.jsonl"
RUN = (14, 15, 16, 17, 18)  # the whole blocks of the cut
LAMBDAS = (1 / 6, 0.1, 0.3, 1.0)

torch.set_num_threads(2)
teacher, tok = shared_model("smollm2-135m")
blocks = DataConfig("wiki-leads", "calib", 128, 16).blocks(tok, teacher)
t0 = time.time()


def stats(model) -> tuple[float, float]:
    """Mean KL(original ‖ model) per position and mean next-token NLL of ``model`` on the blocks."""
    return kl_and_nll(teacher, model, blocks)


@torch.no_grad()
def merged(target: int, lam: float, prefix: str) -> torch.nn.Module:
    """A copy of the original with the run's parameters under ``prefix`` (of a block) folded into ``target``."""
    model = copy.deepcopy(teacher)
    layers = model.model.layers
    params = {n: p for n, p in layers[target].named_parameters() if n.startswith(prefix)}
    for name, p in params.items():
        delta = sum(dict(layers[k].named_parameters())[name] - p for k in RUN)
        p += lam * delta
    return model


base = list(PART_SWAP_20)
kl0, nll0 = stats(prune_sublayers(teacher, base))
rows = [{"target": None, "lambda": 0.0, "kl": kl0, "nll": nll0}]
print(json.dumps(rows[-1]), flush=True)
for target, prefix in ((19, ""), (19, "mlp"), (13, "self_attn")):
    for lam in LAMBDAS:
        kl, nll = stats(prune_sublayers(merged(target, lam, prefix), base))
        rows.append({"target": f"{target}.{prefix or 'block'}", "lambda": round(lam, 4), "kl": kl, "nll": nll})
        print(json.dumps(rows[-1]), flush=True)
summary = {"removal_kl": kl0, "removal_nll": nll0, "best": min(rows[1:], key=lambda r: r["kl"]),
           "lower_kl": sum(r["kl"] < kl0 for r in rows[1:]), "trials": len(rows) - 1, "seconds": round(time.time() - t0)}
print(json.dumps(summary))
with RESULTS.open("a") as f:
    f.write(json.dumps(summary) + "\n")
