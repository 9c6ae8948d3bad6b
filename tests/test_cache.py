"""The cache's building blocks: keys, atomic folders and their recovery, user paths, ``cache verify``."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from frankenllama import paths
from frankenllama.cache import atomic_dir, cache_path, cached_arrays, cached_json, config_key
from frankenllama.cli import main
from frankenllama.integrity import verify_cache, write_manifest
from frankenllama.paths import resolve_user_path


def test_key_depends_on_stage_config_and_code():
    assert config_key("s", {"a": 1}) == config_key("s", {"a": 1})
    assert len({config_key("s", {"a": 1}), config_key("t", {"a": 1}), config_key("s", {"a": 2}),
                config_key("s", {"a": 1}, code=("frankenllama.loss",))}) == 4


def test_cached_values_round_trip_exactly(tmp_path):
    arrays = {"a": np.linspace(0, 1, 7), "n": np.array([3, 4])}
    first = cached_arrays("s", {"k": 1}, lambda: arrays, root=tmp_path)
    again = cached_arrays("s", {"k": 1}, lambda: 1 / 0, root=tmp_path)
    assert all(np.array_equal(first[k], again[k]) and first[k].dtype == again[k].dtype for k in arrays)
    assert cached_json("j", {"k": 1}, lambda: {"x": 0.1 + 0.2}, root=tmp_path) == {"x": 0.1 + 0.2}
    assert cached_json("j", {"k": 1}, lambda: 1 / 0, root=tmp_path) == {"x": 0.1 + 0.2}


def test_atomic_dir_keeps_the_old_folder_on_error(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "f").write_text("v1")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "f").write_text("v2")
        raise RuntimeError
    assert (target / "f").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]
    with pytest.raises(FileExistsError):
        with atomic_dir(target, overwrite=False):
            pass


def test_next_writer_rolls_back_a_killed_swap_and_removes_temporaries(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "f").write_text("v1")
    target.rename(tmp_path / ".out.old")  # killed between the two renames of a replacement
    (tmp_path / ".out.abc123.tmp").mkdir()  # a killed writer's temporary folder
    with atomic_dir(target) as tmp:
        assert (target / "f").read_text() == "v1"  # rolled back before this write began
        (tmp / "f").write_text("v2")
    assert (target / "f").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_user_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("FRANKENLLAMA_CWD", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_user_path("m.gguf") == tmp_path.resolve() / "m.gguf"  # the command line: cwd
    assert resolve_user_path("/abs/m.gguf") == paths.Path("/abs/m.gguf")
    assert resolve_user_path("m.gguf", base="/base") == paths.Path("/base/m.gguf")
    assert resolve_user_path("~/m.gguf") == paths.Path.home() / "m.gguf"
    monkeypatch.chdir(paths.NOTEBOOKS_DIR)
    assert resolve_user_path("m.gguf") == paths.NOTEBOOKS_DIR.resolve() / "m.gguf"  # a shell in notebooks/
    kernel = types.SimpleNamespace(IPKernelApp=types.SimpleNamespace(initialized=lambda: True))
    monkeypatch.setitem(sys.modules, "ipykernel.kernelapp", kernel)  # a notebook kernel (papermill --cwd notebooks)
    assert resolve_user_path("data/m.gguf") == paths.ROOT / "data/m.gguf"
    monkeypatch.setenv("FRANKENLLAMA_CWD", str(tmp_path))
    assert resolve_user_path("m.gguf") == tmp_path.resolve() / "m.gguf"


def _cache_with_every_status(root):
    cached_json("good", {"k": 1}, lambda: [1], root=root)
    bad = cache_path("bad", {"k": 1}, root)
    cached_json("bad", {"k": 1}, lambda: [1, 2, 3], root=root)
    (bad / "result.json").write_text((bad / "result.json").read_text().replace("3", "4"))  # same size
    legacy = root / "old" / "0123456789abcdef"
    legacy.mkdir(parents=True)
    (legacy / "result.json").write_text("[1]")
    (legacy / "meta.json").write_text(json.dumps({"config": {}}))
    model = root / "variants" / "pico"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"weights")
    write_manifest(model)
    (root / "variants" / "plain").mkdir()
    (root / "good" / ".0000000000000000.zz9.tmp").mkdir()
    return bad


def test_cache_verify_reports_and_fixes(tmp_path, capsys):
    bad = _cache_with_every_status(tmp_path)
    assert main(["cache", "verify", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"corrupt      bad/{bad.name}  {bad}/result.json fails its SHA-256" in out
    assert "legacy       old/0123456789abcdef" in out and "ok           variants/pico" in out
    assert "unchecked    variants/plain" in out and "stale        good/.0000000000000000.zz9.tmp" in out
    assert out.splitlines()[-1] == (f"cache verify: 6 entries in {tmp_path}: 2 ok, 1 corrupt, 1 legacy, "
                                    "1 unchecked, 1 stale")
    assert main(["cache", "verify", "--root", str(tmp_path), "--fix"]) == 0
    assert "2 quarantined" in capsys.readouterr().out
    assert len(list((tmp_path / ".quarantine").iterdir())) == 2
    assert {r.status for r in verify_cache(tmp_path)} == {"ok", "unchecked"}


def test_atomic_file_keeps_the_suffix_and_leaves_nothing_on_error(tmp_path):
    from frankenllama.cache import atomic_file

    target = tmp_path / "fig.png"
    with atomic_file(target) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"png")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError
    assert target.read_bytes() == b"png" and [p.name for p in tmp_path.iterdir()] == ["fig.png"]
