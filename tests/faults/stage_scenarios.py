"""Fault scenarios that run the real stages: the similarity stage, the ablation scan and SLEB's greedy
search through the pruning stage's ``SelectionContext`` disk store, ``save_pruned_variants`` (which
calls ``frankenllama.variants.save_variant``) and ``frankenllama.healing.heal`` with a checkpoint
after every step.

The inputs every run reads (a pico llama saved as a transformers folder and a text corpus) are
written once per test folder by ``prepare`` — in the test process, before a run is forked and
traced, so a kill never falls in the fixture and every run of a test executes the same lines. A
scenario points ``paths.CACHE_DIR`` / ``paths.VARIANTS_DIR`` at ``workdir / "cache"`` (it runs in a
forked child, so the change dies with it) and returns only deterministic numbers: timings, paths
and "was this a cache hit" flags are left out, so a killed-and-re-run result must equal an
undisturbed one exactly.

``export`` writes a sub-block-pruned pico llama (a ``deci`` file, q8_0) with
``frankenllama.export.export_gguf``: a kill must leave either no file or the whole one, and no
temporary file beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import torch

import conftest
from frankenllama import cache, paths
from frankenllama.cache import atomic_dir
from frankenllama.healing import HealConfig, heal
from frankenllama.loss import next_token_nll
from frankenllama.stages import (DataConfig, PruningConfig, ScoringConfig, SimilarityConfig, pruning_stage,
                                 similarity_stage)
from frankenllama.stages.pruning import save_pruned_variants
from frankenllama.surgery import drop_layers
from frankenllama.variants import load_variant

WORDS = "the a of and to in is was on for by with as at from it that this an be".split()


def inputs(workdir: Path) -> Path:
    """The folder of the inputs of ``workdir``'s runs (shared by the runs of one test)."""
    return Path(workdir).parent / "inputs"


def prepare(workdir: Path) -> None:
    """Write the pico llama folder (5 blocks) and a 300-document corpus beside ``workdir``, once."""
    folder = inputs(workdir)
    if folder.exists():
        return
    with atomic_dir(folder) as tmp:
        conftest.tiny_llama(num_layers=5, seed=3).save_pretrained(tmp / "model")
        conftest.tiny_tokenizer().save_pretrained(tmp / "model")
        rng = random.Random(0)
        docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) for _ in range(300)]
        (tmp / "corpus.txt").write_text("\n\n".join(docs))


def _use_cache(workdir: Path) -> None:
    torch.set_num_threads(1)
    paths.CACHE_DIR = Path(workdir) / "cache"
    paths.VARIANTS_DIR = paths.CACHE_DIR / "variants"


def _similarity_config(workdir: Path) -> SimilarityConfig:
    corpus = str(inputs(workdir) / "corpus.txt")
    return SimilarityConfig(str(inputs(workdir) / "model"), DataConfig(corpus, "calib", 16, 6), batch_size=3)


def _pruning_config(workdir: Path, strategy: str) -> PruningConfig:
    corpus = str(inputs(workdir) / "corpus.txt")
    scoring = ScoringConfig(DataConfig(corpus, "calib", 16, 4), batch_size=2, taylor_jackknife=False)
    return PruningConfig(similarity=_similarity_config(workdir), scoring=scoring,
                         eval_data=DataConfig(corpus, "eval", 16, 4), strategies=(strategy,), ks=(0, 1, 2), batch_size=2)


def similarity_stage_run(workdir: Path) -> dict[str, Any]:
    """Notebook 01's ``similarity_stage`` on the pico folder (an ``arrays.npz`` entry)."""
    _use_cache(workdir)
    return {k: v.tolist() for k, v in similarity_stage(_similarity_config(workdir)).to_arrays().items()}


def _curves(workdir: Path, strategy: str) -> list[dict[str, Any]]:
    _use_cache(workdir)
    df = pruning_stage(_pruning_config(workdir, strategy))
    return [{"k": int(r.k), "layers": list(r.layers), "eval_nll": float(r.eval_nll)} for r in df.itertuples()]


def ablation_scan(workdir: Path) -> list[dict[str, Any]]:
    """The pruning stage with ablation-nll: similarity entry, scan entry (context store), curves entry."""
    return _curves(workdir, "ablation-nll")


def greedy_search(workdir: Path) -> list[dict[str, Any]]:
    """The pruning stage with SLEB: its greedy search stored through the context's disk store."""
    return _curves(workdir, "sleb")


def _digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def variant_save(workdir: Path) -> dict[str, Any]:
    """``save_pruned_variants`` at k = 1 (pruning stage, then ``save_variant``); the variant reloaded and scored."""
    _use_cache(workdir)
    names = save_pruned_variants(_pruning_config(workdir, "ablation-nll"), ks=(1,), also=())
    out = {}
    for name in names:
        model, _ = load_variant(name, dtype="float32", device="cpu")
        ids = torch.randint(3, 23, (2, 16), generator=torch.Generator().manual_seed(0))  # (N, T)
        with torch.inference_mode():
            nll = float(next_token_nll(model(ids).logits, ids).mean())
        out[name] = {"weights": _digest(model), "nll": nll, "layers": model.config.num_hidden_layers}
    return out


def heal_run(workdir: Path) -> dict[str, Any]:
    """``heal`` (kd-lora, dropout on, teacher targets cached) for 6 steps, a checkpoint after every step."""
    _use_cache(workdir)
    teacher = conftest.tiny_llama(num_layers=4, seed=0)
    student = drop_layers(teacher, [2])
    g = torch.Generator().manual_seed(1)
    train, evals = torch.randint(0, 128, (12, 16), generator=g), torch.randint(0, 128, (4, 16), generator=g)
    config = HealConfig(recipe="kd-lora", tokens=6 * 2 * 16, batch_size=2, kd_top_k=8, lora_dropout=0.2,
                        checkpoint_every=1, eval_every=2)
    result = heal(student, conftest.tiny_tokenizer(), config, train_blocks=train, teacher=teacher, eval_blocks=evals,
                  out_dir=paths.VARIANTS_DIR / "healed-pico", progress=False)
    with open(Path(workdir) / "heal-runs.jsonl", "a") as log:  # the harness's record: did this run resume?
        log.write(json.dumps({"resumed_from_step": result.resumed_from_step, "cached": result.cached}) + "\n")
    return {"weights": _digest(result.model), "losses": [r["loss"] for r in result.losses],
            "curve": [[c["step"], c["ppl"]] for c in result.curve], "ppl_after": result.ppl_after,
            "tokens_seen": result.tokens_seen}


def export_run(workdir: Path) -> dict[str, Any]:
    """``export_gguf`` of a sub-block-pruned pico llama (char tokenizer) to q8_0; the file's digest and the folder's names."""
    from tiny_lm import char_tokenizer

    from frankenllama.export import export_gguf
    from frankenllama.sublayer import prune_sublayers

    source = inputs(workdir) / "export-source"
    if not source.exists():  # written once, before any kill of this test (see ``prepare_export``)
        raise FileNotFoundError(source)
    out = Path(workdir) / "pico-q8_0.gguf"
    export_gguf(source, out, "q8_0", force=True, pre_tokenizer="default")
    leftovers = sorted(p.name for p in Path(workdir).iterdir() if p.name.startswith("."))
    return {"sha256": hashlib.sha256(out.read_bytes()).hexdigest(), "leftovers": leftovers}


def prepare_export(workdir: Path) -> None:
    """Write the export scenario's source: a 4-block pico llama with block 1's MLP and block 2's attention removed."""
    from tiny_lm import char_tokenizer

    from frankenllama.sublayer import prune_sublayers

    folder = inputs(workdir) / "export-source"
    if folder.exists():
        return
    model = conftest.tiny_llama(4, vocab_size=96, bos_token_id=None, pad_token_id=1)
    with atomic_dir(folder) as tmp:
        prune_sublayers(model, [3, 4]).save_pretrained(tmp)
        char_tokenizer().save_pretrained(tmp)


def _log_entry_writes(workdir: Path) -> None:
    """Make every cache-entry write of this (forked) process append ``pid config`` to ``writes.log`` and
    hold its key's lock 0.3 s longer, so that a second process asking for that key meanwhile must wait."""
    original = cache.provenance

    def logged(config: Any, seed: int | None = None, code: tuple[str, ...] = ()) -> dict[str, Any]:
        with open(Path(workdir) / "writes.log", "a") as log:
            log.write(f"{os.getpid()} {json.dumps(cache.to_jsonable(config), sort_keys=True)}\n")
        time.sleep(0.3)
        return original(config, seed, code)

    cache.provenance = logged


def similarity_stage_logged(workdir: Path) -> dict[str, Any]:
    """``similarity_stage_run`` recording which process wrote the entry (for two runs at once)."""
    _log_entry_writes(workdir)
    return similarity_stage_run(workdir)


def ablation_scan_logged(workdir: Path) -> list[dict[str, Any]]:
    """``ablation_scan`` (three entries: similarity, scan, curves) recording which process wrote each."""
    _log_entry_writes(workdir)
    return ablation_scan(workdir)
