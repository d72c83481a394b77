"""One file lock for every "only one at a time on this machine" rule (registry moves, a day's data, GX).

An exclusive ``flock`` on a file under the state folder: it serialises processes and threads of one
machine (each caller opens its own descriptor). Workers on several machines need a shared state folder,
or a lock of their own kind (the registry keeps one in MLflow).
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class LockTimeout(RuntimeError):
    """The lock stayed held by someone else for longer than the caller would wait."""


@contextmanager
def file_lock(path: Path, *, wait_s: float | None = None, what: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created with its folder); wait forever, or ``wait_s`` seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = None if wait_s is None else time.monotonic() + wait_s
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None else 0))
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() > deadline:
                    raise LockTimeout(f"{what or 'lock'} held for over {wait_s:.0f} s ({path})") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
