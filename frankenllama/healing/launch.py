"""Heal a saved model under ``accelerate launch`` (DDP over processes or GPUs), or in one process.

    accelerate launch --num_processes 4 -m frankenllama.healing.launch \\
        --student data/cache/variants/smollm2-135m/sleb-k6 --teacher smollm2-135m \\
        --recipe kd-lora --tokens 65536 --batch-size 8 --out data/cache/variants/smollm2-135m/sleb-k6-kd-lora

    python -m frankenllama.healing.launch ...          # the same run in one process
    accelerate launch --multi_gpu --num_processes 2 -m frankenllama.healing.launch ...   # 2 CPU processes (gloo)

On a machine without a GPU, ``accelerate launch --cpu`` starts one process whatever
``--num_processes`` says (accelerate 1.15's simple launcher; several CPU processes need mpirun
there); ``--multi_gpu`` starts them through torchrun and this script runs them as accelerate's
MULTI_CPU DDP over gloo.

Every recipe of ``frankenllama.healing.RECIPES`` runs (``heal`` with an ``accelerate.Accelerator``):
each process loads the student (and, for distillation, the teacher: co-located in every process;
with the default ``kd_top_k`` the main process runs it once over the run's blocks and every process
reads the cached top-k targets, so a student too big to sit beside its teacher can still be
distilled — run the teacher pass on its own first, or point ``--teacher`` at the model whose
targets are cached). ``--batch-size`` is the global batch: each of P processes steps on
``batch_size / P`` blocks, so a run ends with the weights of a one-process run at the same batch
and seed (to float rounding), and resumes from its checkpoints (``--checkpoint-every``) after a
kill, with another number of processes if need be.

Training blocks: ``--train-blocks FILE.npy`` (an ``(N, T)`` integer array) or ``--corpus NAME`` (its
``train`` split cut into ``--block-len`` token blocks); likewise ``--eval-blocks`` / the ``eval``
split for the perplexity before and after. ``FRANKENLLAMA_HEAL_STOP_AFTER=N`` makes every process
exit (status 75) right after step N and its checkpoint, as a run killed there would (tests).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from frankenllama import paths
from frankenllama.healing.recipes import RECIPES, HealConfig

STOP_ENV = "FRANKENLLAMA_HEAL_STOP_AFTER"
STOPPED = 75  # the exit status of a run stopped by STOP_ENV


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m frankenllama.healing.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", required=True, help="registry name or transformers / variant folder of the pruned model")
    parser.add_argument("--teacher", help="the unpruned model (distillation and the linear patch need it)")
    parser.add_argument("--recipe", default="lora", help=f"one of {sorted(RECIPES)} or 'linear-patch+<recipe>'")
    parser.add_argument("--tokens", type=int, default=16_384, help="training-token budget")
    parser.add_argument("--batch-size", type=int, default=4, help="global batch (blocks per optimizer step, over all processes)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    parser.add_argument("--kd-top-k", type=int, default=64, help="cached teacher top-k (0: teacher run at every step)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-blocks", type=Path, help="(N, T) int .npy of training blocks")
    parser.add_argument("--eval-blocks", type=Path, help="(N, T) int .npy of held-out blocks")
    parser.add_argument("--corpus", help="corpus whose train (and eval) split to cut into blocks, e.g. wiki-leads")
    parser.add_argument("--block-len", type=int, default=128)
    parser.add_argument("--max-blocks", type=int, default=256)
    parser.add_argument("--out", type=Path, required=True, help="folder for the healed model (written by the main process)")
    parser.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (0: none)")
    parser.add_argument("--checkpoint-dir", type=Path, help="default: hidden beside --out")
    parser.add_argument("--cache-dir", type=Path, help="cache folder (teacher targets); default data/cache")
    parser.add_argument("--dtype", default="auto", help="auto: float32 on the CPU, bfloat16 on a GPU (load_model)")
    parser.add_argument("--cpu", action="store_true", help="stay on the CPU even with a GPU")
    return parser.parse_args(argv)


def _blocks(path: Path | None, tokenizer, corpus: str | None, split: str, block_len: int, max_blocks: int) -> torch.Tensor | None:
    if path is not None:
        array = np.load(path)
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{path} must hold an (N, T) integer array of token ids, got {array.dtype} {array.shape}")
        return torch.from_numpy(array.astype(np.int64))
    if corpus is None:
        return None
    from frankenllama.data import load_corpus, token_blocks

    return token_blocks(tokenizer, load_corpus(corpus, split), block_len, max_blocks=max_blocks)


def run(args: argparse.Namespace) -> int:
    """Heal as ``args`` say; returns the exit status."""
    from accelerate import Accelerator

    from frankenllama.healing.pipeline import heal
    from frankenllama.models import load_model

    if args.cache_dir is not None:
        paths.CACHE_DIR = args.cache_dir  # read by the cache when called
    # accelerate runs processes started without a GPU as MULTI_CPU (gloo) only when told cpu=True
    accelerator = Accelerator(cpu=args.cpu or not torch.cuda.is_available())
    device = accelerator.device
    student, tokenizer = load_model(args.student, dtype=args.dtype, device=device)
    teacher, teacher_tok = load_model(args.teacher, dtype=args.dtype, device=device) if args.teacher else (None, None)
    train_blocks = _blocks(args.train_blocks, tokenizer, args.corpus, "train", args.block_len, args.max_blocks)
    eval_blocks = _blocks(args.eval_blocks, tokenizer, args.corpus if args.eval_blocks is None else None, "eval",
                          args.block_len, args.max_blocks)  # fmt: skip
    config = HealConfig(recipe=args.recipe, tokens=args.tokens, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        kd_top_k=args.kd_top_k, checkpoint_every=args.checkpoint_every)  # fmt: skip
    stop = int(os.environ.get(STOP_ENV, "0"))

    def on_step(step: int, trainer) -> None:
        if stop and step == stop:
            accelerator.wait_for_everyone()
            accelerator.print(f"stopped after step {step} ({STOP_ENV})")
            sys.stdout.flush()
            os._exit(STOPPED)  # no clean-up: as a killed process

    result = heal(student, tokenizer, config, train_blocks=train_blocks, teacher=teacher, teacher_tokenizer=teacher_tok,
                  eval_blocks=eval_blocks, out_dir=args.out, checkpoint_dir=args.checkpoint_dir,
                  progress=accelerator.is_main_process, on_step=on_step, accelerator=accelerator,
                  copy_student=False)  # fmt: skip
    accelerator.print(f"healed {args.recipe} on {accelerator.num_processes} process(es): {result.steps} steps, "
                      f"{result.tokens_seen:,} tokens, resumed from step {result.resumed_from_step}, "
                      f"eval ppl {result.ppl_before} -> {result.ppl_after}; saved to {args.out}")  # fmt: skip
    accelerator.end_training()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
