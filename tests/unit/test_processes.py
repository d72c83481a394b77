"""The one process helper of the demo and the tests: groups are stopped whole, dead servers fail fast."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from mlops_dev.processes import free_port, kill, spawn, stop, wait_http


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(child.pid)); time.sleep(60)"
    )
    proc = spawn([sys.executable, "-c", script], dict(os.environ), tmp_path / "logs" / "p.log")
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    child = int(pid_file.read_text())
    stop(proc, grace=5)
    assert proc.returncode is not None
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:  # reaped by init once orphaned
        time.sleep(0.05)
    assert not _alive(child), "the grandchild outlived the stop"
    kill(proc)  # already gone: no error


def test_wait_http_fails_fast_when_the_server_dies(tmp_path: Path) -> None:
    proc = spawn([sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ), tmp_path / "p.log")
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with 3"):
        wait_http(f"http://127.0.0.1:{free_port()}/", 30, proc)
    assert time.monotonic() - started < 10
