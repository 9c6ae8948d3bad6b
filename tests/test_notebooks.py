"""Every notebook runs end to end, headless, in its smoke profile (jupytext → papermill)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

from frankenllama.paths import NOTEBOOKS_DIR, figures_dir

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py"))
# notebooks that need an optional runtime: skipped where it is not installed (`make test` installs it)
NEEDS = {"06_deployment": "llama_cpp"}  # llama-cpp-python, requirements-deploy.txt
SMOKE_TIMEOUT_S = 1800  # one papermill run; a hang fails instead of blocking CI
CELL_TIMEOUT_S = 600  # one cell (a cold smoke cache computes here)
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


def assert_widget_state_shows_figures(nb: nbformat.NotebookNode, name: str) -> None:
    """Every widget shown in a cell is in the notebook's saved widget state, and every ``Output`` widget
    there holds a figure and no error: a static view of the executed notebook shows each explorer's default."""
    views = [out["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] for cell in nb.cells
             for out in cell.get("outputs", []) if "application/vnd.jupyter.widget-view+json" in out.get("data", {})]
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    assert all(v in state for v in views), f"{name}: widget views without saved state"
    for model in state.values():
        if model["model_name"] == "OutputModel":
            outputs = model["state"]["outputs"]
            assert not [o for o in outputs if o["output_type"] == "error"], f"{name}: an explorer's saved view is an error"
            assert any("image/png" in o.get("data", {}) for o in outputs), f"{name}: an explorer's saved view has no figure"


@pytest.mark.notebook
@pytest.mark.integration
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_smoke_profile(path, tmp_path):
    if path.stem in NEEDS:
        pytest.importorskip(NEEDS[path.stem], reason=f"{path.stem} needs {NEEDS[path.stem]}: "
                            "pip install -r requirements-deploy.txt")
    source = tmp_path / f"{path.stem}.ipynb"
    jupytext.write(jupytext.read(path), source)
    out_dir = figures_dir(smoke=True)
    started = {p: p.stat().st_mtime for p in out_dir.glob("*")}
    # papermill in a process of its own, as `make notebook-NN` runs it, with the project's engine (its client
    # polls the kernel's channels in slices: papermill's own has sometimes waited forever on a finished explorer
    # cell, the kernel idle and its reply never read; frankenllama.papermill_engine) and a per-cell timeout;
    # a run that still times out is tried once more, and says so
    command = [sys.executable, "-m", "papermill", "--engine", "frankenllama", "--kernel", KERNEL, "--cwd",
               str(NOTEBOOKS_DIR), "-p", "profile", "smoke", "--no-progress-bar", "--execution-timeout",
               str(CELL_TIMEOUT_S), str(source), str(tmp_path / f"{path.stem}.out.ipynb")]  # fmt: skip
    for attempt in range(2):
        run = subprocess.run(command, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S)
        if run.returncode == 0 or "CellTimeoutError" not in run.stderr + run.stdout:
            break
        print(f"{path.name}: a cell timed out after {CELL_TIMEOUT_S} s (attempt {attempt + 1}); running it again")
    assert run.returncode == 0, f"{path.name} failed in the smoke profile:\n{run.stderr[-4000:]}"
    assert_widget_state_shows_figures(nbformat.read(tmp_path / f"{path.stem}.out.ipynb", as_version=4), path.name)
    written = [p for p in out_dir.glob("*.png") if started.get(p) != p.stat().st_mtime]
    assert written, f"{path.name} wrote no figure to {out_dir}"
    for png in written:
        assert png.with_suffix(".pdf").exists()
