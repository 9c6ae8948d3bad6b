"""Two runs asking for one cache key at once: one computes, the other waits and reads; same numbers."""

from __future__ import annotations

import fcntl
import os
import threading

import pytest

from faultkit import assert_nothing_partial, shared_server
from frankenllama.cache import cache_path, cached_json
from frankenllama.locks import LockTimeout, entry_lock, lock_path
from scenarios import cache_root


def test_two_processes_on_one_key_compute_once(tmp_path):
    reply = shared_server().run("slow-json", tmp_path, copies=2)
    assert reply["codes"] == [0, 0], reply
    first, second = (out["result"] for out in reply["outputs"])
    assert first == second
    assert len((tmp_path / "computed.log").read_text().split()) == 1  # computed by one of the two
    assert_nothing_partial(cache_root(tmp_path))


def test_two_threads_on_one_key_compute_once(tmp_path):
    calls, results = [], []
    barrier = threading.Barrier(2)

    def compute():
        calls.append(1)
        threading.Event().wait(0.2)
        return {"value": 1.25}

    def run():
        barrier.wait()
        results.append(cached_json("stage", {"k": 1}, compute, root=tmp_path))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [{"value": 1.25}] * 2 and len(calls) == 1


def test_a_key_held_too_long_is_refused_with_the_holder_named(tmp_path):
    folder = cache_path("stage", {"k": 2}, tmp_path)
    folder.parent.mkdir(parents=True)
    fd = os.open(lock_path(folder), os.O_RDWR | os.O_CREAT)  # another process's lock, as the kernel sees it
    os.write(fd, b"4242\n")
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(LockTimeout, match=rf"process 4242 has been writing {folder}.*FRANKENLLAMA_LOCK_TIMEOUT"):
            cached_json("stage", {"k": 2}, lambda: 1 / 0, root=tmp_path, lock_timeout=0.3)
    finally:
        os.close(fd)
    assert not folder.exists()
    assert cached_json("stage", {"k": 2}, lambda: [1], root=tmp_path) == [1]  # free again once released


def test_lock_is_reentrant_within_a_thread(tmp_path):
    entry = tmp_path / "entry"
    with entry_lock(entry, timeout=0.1), entry_lock(entry, timeout=0.1):
        pass
