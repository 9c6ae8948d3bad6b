"""SIGKILL at seeded points of cached computations, then a re-run: same numbers, nothing partial.

The scenarios (``scenarios.SCENARIOS``) are the write patterns on copies (similarity entry, JSON
entry, model folder, checkpoint folder) and the real stages (``stage_scenarios``: the similarity
stage, the pruning stage's ablation scan and SLEB search through the context's disk store,
``save_pruned_variants`` → ``save_variant``, and ``heal`` with a checkpoint after every step).

Each scenario of ``scenarios.KILL_POINTS`` runs once undisturbed (counting the traced lines it
executes), then at each seeded point: a fresh run killed there, a check that the cache holds no
partial or corrupt entry, a re-run that must return exactly the undisturbed numbers, and a check
that the killed run's temporary files and healing checkpoints are gone. Points alternate between a
traced line anywhere in the run, a traced line after the write began (``atomic_dir``), and a random
time (which may fall inside C code, e.g. in the middle of a ``write``).
"""

from __future__ import annotations

import random

import pytest

from faultkit import assert_nothing_partial, leftovers, shared_server
from scenarios import KILL_POINTS, cache_root


@pytest.fixture
def server():
    return shared_server()


def _points(name: str, lines: int, write_start: int, elapsed: float, count: int) -> list[dict]:
    rng = random.Random(f"kill:{name}")
    points = []
    for i in range(count):
        if i % 3 == 0:
            points.append({"kill": "line", "n": rng.randint(1, lines)})
        elif i % 3 == 1:
            points.append({"kill": "line", "n": rng.randint(write_start, lines)})
        else:
            points.append({"kill": "time", "delay": rng.uniform(0.0, 1.2 * elapsed)})
    return points


@pytest.mark.parametrize("name", sorted(KILL_POINTS))
def test_killed_at_any_point_reruns_to_the_same_numbers(server, name, tmp_path):
    clean = server.run(name, tmp_path / "clean", kill="count")
    assert clean["codes"] == [0], clean
    baseline = clean["outputs"][0]
    assert baseline["write_start"] is not None, "the scenario wrote nothing through atomic_dir"
    killed = 0
    for i, point in enumerate(_points(name, baseline["lines"], baseline["write_start"], baseline["elapsed"],
                                      KILL_POINTS[name])):
        workdir = tmp_path / f"kill{i}"
        reply = server.run(name, workdir, **point)
        assert reply["codes"] in ([None], [0]), f"{point}: the killed run failed instead: {reply}"
        killed += reply["signals"] == [9]
        assert_nothing_partial(cache_root(workdir))
        rerun = server.run(name, workdir, kill="none")
        assert rerun["codes"] == [0], f"re-run after {point} failed: {rerun}"
        assert rerun["outputs"][0]["result"] == baseline["result"], f"re-run after {point} differs"
        assert leftovers(cache_root(workdir)) == [], f"after {point}"
        assert_nothing_partial(cache_root(workdir))
    line_points = sum(p["kill"] == "line" for p in _points(name, 1, 1, 0.0, KILL_POINTS[name]))
    assert killed >= line_points  # every traced point is reached: the run really was killed there
