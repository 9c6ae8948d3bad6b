"""The command line's help: every verb's page reads as written (no argparse noise), and the verb aliases."""

from __future__ import annotations

import pytest

from frankenllama import cli

HELP_PAGES = [["--help"], *([verb, "--help"] for verb in cli.VERBS), ["cache", "verify", "--help"],
              ["export", "--help"]]


@pytest.mark.parametrize("argv", HELP_PAGES, ids=lambda argv: " ".join(argv[:-1]) or "top")
def test_help_pages_hold_no_placeholder_defaults_or_escapes(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 0
    page = capsys.readouterr().out
    assert page.startswith("usage: python -m frankenllama")
    for noise in ("(default: None)", "(default: False)", "%%"):
        assert noise not in page, f"{' '.join(argv)}: {noise!r} in\n{page}"


def test_set_defaults_still_shown(capsys):
    with pytest.raises(SystemExit):
        cli.main(["compress", "--help"])
    page = " ".join(capsys.readouterr().out.split())  # unwrap the help's lines
    assert "(default: part-swap)" in page and "(default: 0)" in page  # --strategy, --seed
    assert "95 % intervals" in page


def test_export_is_export_gguf():
    parser = cli._parser()
    short, long = (parser.parse_args([verb, "model", "out.gguf"]) for verb in ("export", "export-gguf"))
    assert short.run is long.run and short.qtype == long.qtype == "f16"
