"""Every notebook runs end to end, headless, in its smoke profile (jupytext → papermill)."""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import papermill
import pytest

from frankenllama.paths import NOTEBOOKS_DIR, figures_dir

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py"))
KERNEL = "frankenllama" if (Path(sys.prefix) / "share/jupyter/kernels/frankenllama").exists() else "python3"


def test_every_notebook_has_a_parameters_cell_first_naming_its_profile():
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        nb = jupytext.read(path)
        first = next(c for c in nb.cells if c.cell_type == "code")
        assert "parameters" in first.metadata.get("tags", []), path.name
        assert 'profile = "default"' in first.source, path.name
        assert "overrides = {}" in first.source, path.name
        assert "def " not in "".join(c.source for c in nb.cells if c.cell_type == "code"), f"{path.name} defines a function"


@pytest.mark.notebook
@pytest.mark.integration
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_smoke_profile(path, tmp_path):
    source = tmp_path / f"{path.stem}.ipynb"
    jupytext.write(jupytext.read(path), source)
    out_dir = figures_dir(smoke=True)
    started = {p: p.stat().st_mtime for p in out_dir.glob("*")}
    papermill.execute_notebook(
        str(source), str(tmp_path / f"{path.stem}.out.ipynb"), parameters={"profile": "smoke"},
        kernel_name=KERNEL, cwd=str(NOTEBOOKS_DIR), progress_bar=False,
    )
    written = [p for p in out_dir.glob("*.png") if started.get(p) != p.stat().st_mtime]
    assert written, f"{path.name} wrote no figure to {out_dir}"
    for png in written:
        assert png.with_suffix(".pdf").exists()
