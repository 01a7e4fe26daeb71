"""Stopping cleanly on SIGINT and SIGTERM, however the process was started."""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_on_signals() -> None:
    """Make SIGINT and SIGTERM raise KeyboardInterrupt once; repeats are ignored while stopping.

    Installed explicitly by every `gridloop` process: one started with SIGINT ignored (a shell's
    background job, some supervisors) inherits SIG_IGN, and Python then installs no KeyboardInterrupt
    handler, so Ctrl-C or `kill -INT` would do nothing. SIGTERM's default ends the process at once,
    skipping the clean-up that stops children and flushes the outbox."""
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
