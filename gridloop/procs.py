"""Child processes that die with their parent and are stopped as a whole process group."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Self

_PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(None, use_errno=True)


def _child_setup(parent_pid: int) -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGTERM when its parent dies (Linux)."""
    if _libc is None or threading.current_thread() is not threading.main_thread():
        return None
    prctl = _libc.prctl

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return setup


def spawn(
    cmd: list[str], log_path: Path | None, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start cmd in its own session, output appended to log_path (or discarded)."""
    out: IO[bytes] | int = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "ab")  # the child inherits it; closed below
    try:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=_child_setup(os.getpid()),
        )
    finally:
        if not isinstance(out, int):
            out.close()


def signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send a signal to the process group a child leads."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)  # the child leads its own session, so pgid == pid
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def terminate(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM each process group, SIGKILL whatever is left after timeout; reap all."""
    for proc in procs:
        signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
    for proc in procs:
        proc.wait()


class Managed:
    """`with thing:` starts it and stops it again, whatever happens inside."""

    def start(self) -> None:
        """Start the managed thing."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the managed thing."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def tail(path: Path, lines: int = 25, pattern: str | None = None) -> str:
    """The last lines of a text file (only lines matching pattern, if given)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    if pattern is not None:
        regex = re.compile(pattern)
        text = [line for line in text if regex.search(line)]
    return "\n".join(text[-lines:])
