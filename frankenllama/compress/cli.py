"""``python -m frankenllama compress --model M --target T --out DIR …``: the command line of ``compress``."""

from __future__ import annotations

import argparse
import shlex
import sys

from frankenllama.cli import HelpFormatter, UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``compress`` verb (defaults come from ``frankenllama.compress.config``)."""
    from frankenllama.compress.config import DEFAULT_HEAL, DEFAULT_STRATEGY, DEFAULT_TASKS, FALLBACK_STRATEGY, PROFILES
    from frankenllama.compress.target import FORMS
    from frankenllama.eval.tasks import TASKS

    d = PROFILES["default"]
    parser = sub.add_parser(
        "compress", help="make a llama-family model smaller to a size target: select, remove, patch, distil, report",
        description="Remove the blocks (or attention / MLP sub-blocks) a selection strategy finds least needed "
                    "until the model meets TARGET, heal it (training-free linear patch, then distillation from the "
                    "original), and save it with report.json / report.md (perplexity in and out of domain, paired "
                    "zero-shot differences with 95 % intervals, speed). Re-running the same command resumes.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--model", required=True, help="registry name (smollm2-135m), transformers folder or .gguf file")
    parser.add_argument("--target", required=True, help=FORMS.replace("%", "%%"))
    parser.add_argument("--out", required=True, help="folder to write (built beside it, then renamed into place)")
    parser.add_argument("--strategy", default=DEFAULT_STRATEGY,
                        help=f"selection strategy (frankenllama.selection.STRATEGIES); {FALLBACK_STRATEGY} if it cannot meet the target")
    parser.add_argument("--heal", default=DEFAULT_HEAL, help="healing recipe or composition (frankenllama.healing.RECIPES)")
    parser.add_argument("--tokens", type=int, default=None, help=f"training tokens of the trained recipe (profile: {d['tokens']})")
    parser.add_argument("--calib-tokens", type=int, default=None,
                        help=f"calibration tokens of the linear patch (profile: {d['calib_tokens']})")
    parser.add_argument("--eval-items", type=int, default=None, help=f"zero-shot items per task (profile: {d['eval_items']})")
    parser.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                        help=f"zero-shot tasks: registry names ({', '.join(sorted(TASKS))}) or .jsonl files of "
                             '{"query", "choices", "gold"} lines (profile: ' + " ".join(DEFAULT_TASKS) + "; thesis: the "
                             "evaluator's eight, frankenllama.eval.tasks.DEFAULT_TASKS)")
    parser.add_argument("--corpus", default=None,
                        help="in-domain text: a corpus name or a text file; its train/calib splits heal, its eval split "
                             "is reported (default: wiki-leads)")
    parser.add_argument("--ood-corpus", default=None,
                        help="out-of-domain text, only its eval split is read: a corpus name or a text file "
                             "(default: olmo-passages)")
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES),
                        help="budgets and scoring settings (thesis: a GPU; smoke: tests)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every step")
    parser.add_argument("--force", action="store_true", help="replace an existing --out (one holding this very run is rebuilt from the cached steps)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from frankenllama.compress.config import CompressConfig, CompressConfigError
    from frankenllama.compress.pipeline import compress
    from frankenllama.compress.steps import CompressError
    from frankenllama.compress.target import TargetError

    try:
        config = CompressConfig.from_profile(args.model, args.target, args.profile, strategy=args.strategy, heal=args.heal,
                                             tokens=args.tokens, calib_tokens=args.calib_tokens,
                                             eval_items=args.eval_items, tasks=args.tasks, seed=args.seed,
                                             corpus=args.corpus, ood_corpus=args.ood_corpus)  # fmt: skip
        command = "python -m frankenllama " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["compress"] else None
        result = compress(config, args.out, force=args.force, command=command)
    except (CompressError, CompressConfigError, TargetError) as err:
        raise UsageError(str(err).splitlines()[0]) from err
    r = result.report
    p = r["perplexity"]
    print(f"{result.out}: {r['choice']['strategy']}, {r['size']['params_compressed']:,} parameters "
          f"({r['size']['params_ratio']:.3f}); perplexity ratio in-domain {p['in-domain']['ppl_ratio']:.3f}, "
          f"out-of-domain {p['out-of-domain']['ppl_ratio']:.3f}; report.md beside the weights", file=sys.stderr)
    return 0
