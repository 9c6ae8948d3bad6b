"""Every path frankenllama reads or writes, rooted at the repository.

Nothing else in the package builds a path from ``__file__`` or the working directory.
"""

from __future__ import annotations

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
