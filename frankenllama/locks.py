"""One writer per cache entry: an advisory ``flock`` on a lock file beside the entry.

Two runs of a workbook in one checkout (``make figures`` started twice, a notebook open while the
tests run) may ask for the same cache entry at once. The first takes the entry's lock, computes and
writes; the second waits on the lock and then reads what the first wrote instead of computing it
again. The lock is ``fcntl.flock`` on ``.<entry>.lock`` in the entry's parent folder: the kernel
drops it when its holder exits, however it exits (SIGKILL included), so a killed run never leaves a
stale lock behind. The lock file itself stays (a few bytes holding the last holder's pid).

Locks are reentrant within a process: a thread that holds an entry's lock may take it again (the
cache holds it around the computation and ``atomic_dir`` again around the write). Other threads of
the same process wait like other processes do.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 2 * 3600.0  # seconds; longer than any single cached computation of the workbook
_POLL = 0.05  # seconds between attempts while another process holds the lock


class LockTimeout(TimeoutError):
    """Another process held a cache entry's lock for longer than the caller would wait."""


class _Held:
    def __init__(self) -> None:
        self.rlock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None


_HELD: dict[str, _Held] = {}
_HELD_GUARD = threading.Lock()


def lock_path(entry: Path) -> Path:
    """The lock file that guards ``entry`` (a cache entry or model folder): ``.<name>.lock`` beside it."""
    return entry.parent / f".{entry.name}.lock"


def default_timeout() -> float:
    """``$FRANKENLLAMA_LOCK_TIMEOUT`` seconds if set, else two hours."""
    return float(os.environ.get("FRANKENLLAMA_LOCK_TIMEOUT", DEFAULT_TIMEOUT))


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return "another process"
    return f"process {pid}" if pid else "another process"


def _flock(path: Path, timeout: float) -> int:
    """Open ``path`` and take its exclusive flock, waiting at most ``timeout`` seconds; return the fd."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    start = time.monotonic()
    announced = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
            waited = time.monotonic() - start
            if waited >= timeout:
                raise LockTimeout(
                    f"{_holder(path)} has been writing {path.parent / path.name[1:-5]} for over {waited:.0f} s "
                    f"(lock {path}); wait for it to finish, or raise FRANKENLLAMA_LOCK_TIMEOUT (seconds)"
                )
            if not announced:
                log.warning("waiting for %s, which is computing %s", _holder(path), path.parent / path.name[1:-5])
                announced = True
            time.sleep(_POLL)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def entry_lock(entry: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the exclusive lock of ``entry`` for the duration of the block (reentrant per thread).

    Raises ``LockTimeout`` (naming the holder's pid and the lock file) when another process holds
    it for longer than ``timeout`` seconds (default ``default_timeout()``).
    """
    path = lock_path(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    with _HELD_GUARD:
        held = _HELD.setdefault(key, _Held())
    with held.rlock:
        if held.depth == 0:
            held.fd = _flock(path, default_timeout() if timeout is None else timeout)
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
            if held.depth == 0 and held.fd is not None:
                os.close(held.fd)  # closing the last fd drops the flock
                held.fd = None


def is_locked(entry: Path) -> bool:
    """Whether some process (this one included) holds ``entry``'s lock right now."""
    path = lock_path(entry)
    if not path.exists():
        return False
    key = str(path.resolve())
    if key in _HELD and _HELD[key].depth:
        return True
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
