"""``python -m frankenllama export-gguf SRC OUT.gguf --qtype …``: the command line of ``export_gguf``."""

from __future__ import annotations

import argparse
import json
import sys

from frankenllama.cli import HelpFormatter, UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``export-gguf`` verb (also ``export``)."""
    from frankenllama.export.gguf import QTYPES  # imported only when the verb is listed or run

    parser = sub.add_parser(
        "export-gguf", aliases=["export"],
        help="write a (pruned) model as a GGUF file for llama.cpp (alias: export)",
        description="Export a registry model, a transformers folder or a workbook variant (sub-block-pruned "
                    "ones included) to GGUF, like convert_hf_to_gguf.py; whole blocks removed give a `llama` "
                    "file, sub-blocks removed a `deci` file with per-layer shapes.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("src", help="registry name (smollm2-135m), transformers folder or variant folder")
    parser.add_argument("out", help="the GGUF file to write (its folder must exist)")
    parser.add_argument("--qtype", choices=list(QTYPES), default="f16", help="storage type of the weight matrices")
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    parser.add_argument("--pre-tokenizer", default=None,
                        help="llama.cpp pre-tokenizer name, when its fingerprint is not recognised")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from frankenllama.export.gguf import ExportError, check_output, export_gguf, resolve_source

    try:
        check_output(args.out, args.force)  # bad paths, out or src, fail before any progress is printed
        resolve_source(args.src)
        print(f"exporting {args.src} -> {args.out} ({args.qtype})", file=sys.stderr)
        summary = export_gguf(args.src, args.out, args.qtype, force=args.force, pre_tokenizer=args.pre_tokenizer)
    except (ExportError, ValueError) as err:
        raise UsageError(str(err).splitlines()[0]) from err
    summary.pop("layers")
    print(json.dumps(summary), file=sys.stderr)
    return 0
