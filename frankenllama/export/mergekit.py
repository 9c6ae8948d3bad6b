"""mergekit passthrough configs for whole-block depth pruning (``mergekit-yaml config.yml out/``).

mergekit's ``passthrough`` merge method stacks ``slices``, each ``sources: [{model, layer_range:
[start, end]}]``; ``layer_range`` ends are exclusive, Python-style (mergekit issue #360), so the kept
blocks ``0 … 12`` and ``19 … 29`` of a 30-block model are the slices ``[0, 13]`` and ``[19, 30]``.
This is the same pruned model ``frankenllama.surgery.drop_layers`` builds, written as a recipe any
mergekit user can rerun from the base model.
"""

from __future__ import annotations

from collections.abc import Iterable

import yaml

from frankenllama.surgery import check_layer_ids


def kept_ranges(removed_layers: Iterable[int], num_layers: int) -> list[tuple[int, int]]:
    """Maximal runs of kept blocks as half-open ``[start, end)`` ranges, in order."""
    removed = set(check_layer_ids(removed_layers, num_layers))
    ranges: list[tuple[int, int]] = []
    start = None
    for i in range(num_layers + 1):
        kept = i < num_layers and i not in removed
        if kept and start is None:
            start = i
        elif not kept and start is not None:
            ranges.append((start, i))
            start = None
    return ranges


def to_mergekit_yaml(base_model: str, removed_layers: Iterable[int], num_layers: int, dtype: str = "float32") -> str:
    """A mergekit passthrough YAML keeping every block of ``base_model`` except ``removed_layers``.

    Args:
        base_model: what mergekit loads (a hub id or a local folder).
        removed_layers: original indices of the removed blocks.
        num_layers: the base model's block count.
        dtype: mergekit's output dtype.
    """
    slices = [{"sources": [{"model": base_model, "layer_range": [start, end]}]}
              for start, end in kept_ranges(removed_layers, num_layers)]
    config = {"merge_method": "passthrough", "dtype": dtype, "slices": slices}
    return yaml.safe_dump(config, sort_keys=False)
