"""Process management for the demo, the benchmark and the tests: one way to spawn, wait for and stop.

Every process starts in its own process group (``start_new_session``), so stopping it stops its
children too, and is stopped by its pid, never by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``args`` in a process group of its own, stdout and stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until ``url`` answers below 500; fails early when ``proc`` (the server) exits first."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status < 500:
                    return
        except OSError as exc:  # HTTPError is one
            last = str(exc)
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout:.0f} s: {last}")


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole process group (no shutdown handler runs), and reap it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def stop_all(procs: Iterable[subprocess.Popen[bytes]], grace: float = 20) -> None:
    """SIGTERM every process group, wait up to ``grace`` seconds in all, then SIGKILL what is left."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill(proc)


def stop(proc: subprocess.Popen[bytes], grace: float = 20) -> None:
    """Stop one process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
    stop_all([proc], grace)
