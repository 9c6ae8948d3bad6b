"""Prepare the workbook's inputs once: check the asset packages, cache the model as safetensors.

Run as ``python -m frankenllama.prepare [model]`` (``make data`` does this).
"""

from __future__ import annotations

import sys
import time

from frankenllama.assets import ASSETS, asset_path
from frankenllama.data import SPLITS, load_corpus
from frankenllama.models import DEFAULT_MODEL, model_folder


def main(model: str = DEFAULT_MODEL) -> None:
    for name in ASSETS:
        print(f"asset {name:13s} {asset_path(name)}")
    for split in SPLITS:
        print(f"wiki-leads/{split:5s} {len(load_corpus('wiki-leads', split)):6d} documents")
    start = time.perf_counter()
    folder = model_folder(model)
    print(f"model {model} → {folder} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main(*sys.argv[1:])
