"""The development text of the bench probes: eval blocks that the default profile never reports on.

On the default profile the notebooks and ``compress`` score the first blocks of 256 tokens of each
eval split (``compress`` 32); the probes that chose the recipe read later blocks of the same splits,
so a choice is not tuned on the text it is reported on. (``compress --profile thesis`` scores 64
blocks, which overlap the out-of-domain ones here.)
"""
import argparse
import json
import pickle
from pathlib import Path

import numpy as np
import torch

from frankenllama.data import load_corpus, token_blocks
from frankenllama.eval.paired import PairedDifference, paired_difference
from frankenllama.eval.perplexity import perplexity
from frankenllama.eval.zero_shot import evaluate_tasks
from frankenllama.paths import CACHE_DIR
from frankenllama.healing import HealConfig
from frankenllama.stages.common import DataConfig, shared_model
from frankenllama.stages.recipe import OURS_HEAL_OPTIONS, OURS_RECIPE

OOD_BLOCKS = slice(48, 80)  # olmo-passages eval: out of domain
IN_BLOCKS = slice(24, 40)  # wiki-leads eval: in domain (zero_shot_recipe_probe reads 32-56)
# the cut the probes study: part-swap at k = 6 of SmolLM2's 30 blocks (figures/pruning_curve.csv), what
# compress --target 0.843 removes: 5.attn, 13.mlp and blocks 14-18 as sub-block ids (2l attention, 2l+1 MLP)
PART_SWAP_20 = (10, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37)


def development_blocks(tokenizer, in_blocks: slice = IN_BLOCKS, block_len: int = 256):
    """Out-of-domain and in-domain development blocks (token-id tensors), in that order."""
    ood = token_blocks(tokenizer, load_corpus("olmo-passages", "eval"), block_len, max_blocks=OOD_BLOCKS.stop)
    ind = token_blocks(tokenizer, load_corpus("wiki-leads", "eval"), block_len, max_blocks=in_blocks.stop)
    return ood[OOD_BLOCKS], ind[in_blocks]


# ---- the zero-shot development probes (zero_shot_recipe_probe, self_data_probe, pair_probes) ----
# Zero-shot items drawn with seed 1 (the reports draw with seed 0) and wiki-leads eval blocks 32-55.
DEV_TASKS = ("arc_easy", "piqa", "hellaswag")
DEV_IN_BLOCKS = slice(32, 56)
# (field of the results lines, stem of its interval fields, per-item column, scale, digits)
METRICS = (("acc_norm", "acc", 0, 100.0, 2), ("prob_norm", "prob", 2, 100.0, 2), ("bpb", "bpb", 1, 1.0, 4))


def saved_run(tag: str, items: int) -> Path:
    """Where a tagged probe run's per-item scores live (``original``: the unpruned model's reference)."""
    name = f"original_{items}_v2" if tag == "original" else f"{tag}_{items}"  # v2: items carry gold_prob_norm
    return CACHE_DIR / f"zero_shot_probe_{name}.pkl"


def measure(model, tokenizer, blocks, items: int) -> dict:
    """Development perplexity (``blocks`` = (ood, ind)) and per-item (acc_norm, gold_bpb, gold_prob_norm)."""
    scores = evaluate_tasks(model, tokenizer, DEV_TASKS, items, seed=1, chat_template=True)
    per_item = {t: [(i.acc_norm, i.gold_bpb, i.gold_prob_norm) for i in scores[t].items] for t in DEV_TASKS}
    ood, ind = blocks
    return {"ood": perplexity(model, ood, batch_size=8), "ind": perplexity(model, ind, batch_size=8), "items": per_item}


def original_scores(teacher, tokenizer, blocks, items: int) -> dict:
    """The unpruned model's development scores, measured once and kept in the cache."""
    path = saved_run("original", items)
    if not path.exists():
        path.write_bytes(pickle.dumps(measure(teacher, tokenizer, blocks, items)))
    return pickle.loads(path.read_bytes())


def paired(a: dict, b: dict) -> dict[str, PairedDifference]:
    """``a − b`` of each metric over the same items (95 % paired bootstrap, stratified by task)."""
    groups = np.concatenate([[t] * len(b["items"][t]) for t in DEV_TASKS])

    def column(scores: dict, j: int, scale: float) -> np.ndarray:
        return scale * np.concatenate([[s[j] for s in scores["items"][t]] for t in DEV_TASKS])

    return {name: paired_difference(column(a, j, scale), column(b, j, scale), groups=groups)
            for name, _, j, scale, _ in METRICS}


def paired_row(got: dict, original: dict) -> dict[str, float]:
    """A probe run's fields against the original: each metric's difference and interval, perplexity ratios."""
    row, diffs = {}, paired(got, original)
    for name, stem, _, _, digits in METRICS:
        d = diffs[name]
        row.update({name: round(d.diff, digits), f"{stem}_lo": round(d.low, digits), f"{stem}_hi": round(d.high, digits)})
    return row | {"ood": round(got["ood"] / original["ood"], 4), "ind": round(got["ind"] / original["ind"], 4)}


def development_run(items: int) -> tuple:
    """A probe's start on 2 threads: the original model and tokenizer, the development blocks, its reference scores."""
    torch.set_num_threads(2)
    teacher, tokenizer = shared_model("smollm2-135m")
    blocks = development_blocks(tokenizer, DEV_IN_BLOCKS)
    return teacher, tokenizer, blocks, original_scores(teacher, tokenizer, blocks, items)


def healing_data(tokenizer, teacher, tokens: int, calib: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A probe's healing inputs: ``tokens`` of wiki-leads ``train`` and ``calib`` of its ``calib`` split, in blocks
    of 256."""
    train = token_blocks(tokenizer, load_corpus("wiki-leads", "train"), 256, max_blocks=tokens // 256)
    return train, DataConfig("wiki-leads", "calib", 256, calib // 256).blocks(tokenizer, teacher)


def recipe_arguments(description: str, items: int, tag: str) -> argparse.ArgumentParser:
    """A probe's command line with the recipe's budgets (``--tokens``, ``--calib``, ``--kdw``), ``--items`` and
    ``--tag``; the probe adds its own arguments."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--tokens", type=int, default=32768, help="training tokens of the recipe (compress's default)")
    p.add_argument("--calib", type=int, default=32768, help="calibration tokens of the linear patch")
    p.add_argument("--kdw", type=float, default=0.5, help="kd_weight of the recipe")
    p.add_argument("--items", type=int, default=items, help="zero-shot items per task")
    p.add_argument("--tag", default=tag)
    return p


def recipe_config(tokens: int, calib: int, **changes) -> HealConfig:
    """The recipe as the probes heal with it (``OURS_RECIPE``, ``OURS_HEAL_OPTIONS``, four blocks a step, the
    teacher's top 64, seed 0) on ``tokens`` training and ``calib`` calibration tokens; ``changes`` override."""
    settings = {"recipe": OURS_RECIPE, "tokens": tokens, "batch_size": 4, "patch_tokens": calib, "kd_top_k": 64,
                "seed": 0, **dict(OURS_HEAL_OPTIONS)}
    return HealConfig(**(settings | changes))


def record(row: dict, got: dict, tag: str, items: int, results: Path) -> None:
    """Print a probe run's results line and append it to ``results``; with a ``tag``, keep its per-item
    scores (``saved_run``) so that two runs can be paired with each other (bench/pair_probes.py)."""
    print(json.dumps(row))
    if tag:
        saved_run(tag, items).write_bytes(pickle.dumps(got))
    with results.open("a") as f:
        f.write(json.dumps(row) + "\n")


@torch.no_grad()
def kl_and_nll(teacher, model, blocks: torch.Tensor, batch_size: int = 4) -> tuple[float, float]:
    """Mean KL(original ‖ model) per position and mean next-token NLL of ``model`` on token ``blocks``."""
    kl = nll = n = 0.0
    for i in range(0, len(blocks), batch_size):
        ids = blocks[i : i + batch_size]
        ref = torch.log_softmax(teacher(ids).logits.float(), -1)
        out = torch.log_softmax(model(ids).logits.float(), -1)
        nll += float(-out[:, :-1].gather(-1, ids[:, 1:, None]).sum())
        kl += float((ref.exp() * (ref - out)).sum())
        n += ids[:, 1:].numel()
    return kl / (n + len(blocks)), nll / n
