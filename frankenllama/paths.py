"""Every path frankenllama reads or writes, rooted at the repository.

Nothing else in the package builds a path from ``__file__`` or the working directory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "data"
CACHE_DIR = DATA_DIR / "cache"  # git-ignored: models, statistics, healed weights, results
MODELS_CACHE_DIR = CACHE_DIR / "models"
VARIANTS_DIR = CACHE_DIR / "variants"
FIGURES_DIR = ROOT / "figures"
BUILD_DIR = ROOT / "build"  # git-ignored: executed notebooks, smoke-profile figures
NOTEBOOKS_DIR = ROOT / "notebooks"


def figures_dir(smoke: bool = False) -> Path:
    """Where a notebook writes its figures and tables.

    The default profile writes to ``figures/`` (committed); the smoke profile writes to
    ``build/smoke-figures/`` so that tests never overwrite the thesis figures.
    """
    path = BUILD_DIR / "smoke-figures" if smoke else FIGURES_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def _in_notebook_kernel() -> bool:
    """Whether this process is a running Jupyter kernel (JupyterLab, or papermill under ``make figures``)."""
    app = sys.modules.get("ipykernel.kernelapp")
    return app is not None and app.IPKernelApp.initialized()


def user_base() -> Path:
    """The folder a relative path typed by the user is relative to (see ``resolve_user_path``)."""
    if os.environ.get("FRANKENLLAMA_CWD"):
        return Path(os.environ["FRANKENLLAMA_CWD"]).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if _in_notebook_kernel() and cwd == NOTEBOOKS_DIR.resolve():
        return ROOT
    return cwd


def resolve_user_path(path: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """An absolute path for a path the user typed, relative to where they meant it.

    ``~`` is expanded and absolute paths are kept. A relative path is taken relative to ``base``
    when given, else to ``$FRANKENLLAMA_CWD`` when set, else — inside a notebook kernel running in
    ``notebooks/`` (papermill under ``make figures``, JupyterLab) — to the repository root, since
    that is where the user typed the ``make`` command; else (the command line, scripts) to the
    current directory. Registry names (``"smollm2-135m"``, ``"wiki-leads"``) are not paths: resolve
    only what is not one.
    """
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    root = Path(base).expanduser().resolve() if base is not None else user_base()
    return root / p
