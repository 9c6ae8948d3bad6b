"""The command line: ``python -m frankenllama VERB …``, a thin argparse layer over package functions.

Each verb lives in the module that does its work and registers itself in ``VERBS`` as
``name -> "module:function"``; that function receives the subparsers object and adds its parser,
with ``set_defaults(run=callable)``. Modules are imported only when their verb is listed or run,
so ``--help`` stays fast. Progress goes to stderr, results to files; bad input exits 2 with one
line naming the problem and the fix (``UsageError``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# verb -> "module:function that adds its subparser"
VERBS: dict[str, str] = {
    "compress": "frankenllama.compress.cli:add_parser",
    "export-gguf": "frankenllama.export.cli:add_parser",
    "budget": "frankenllama.export.budget:add_parser",
    "plan": "frankenllama.plan.report:add_parser",
    "cache": "frankenllama.integrity:add_cache_parser",
}


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2, nothing written."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every verb's help: each option's default after its help, except where there is none to show.

    An option whose default is ``None`` (its help says where the value comes from: the profile, the
    model) or a flag (``False``) gets no ``(default: None)`` / ``(default: False)``.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m frankenllama",
        description="Make llama-family models shallower: compress, export, plan.",
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for spec in VERBS.values():
        module, function = spec.split(":")
        getattr(importlib.import_module(module), function)(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the verb; return the process exit status."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = _parser().parse_args(argv)
    try:
        result = args.run(args)
    except UsageError as err:
        print(f"python -m frankenllama {args.verb}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)
