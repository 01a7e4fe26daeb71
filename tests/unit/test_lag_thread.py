"""A lag measurement that never returns cannot keep a service from stopping (gridloop.lag.off_loop)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gridloop.lag import off_loop


def test_a_stuck_call_does_not_hold_the_loop_at_shutdown() -> None:
    """asyncio.run returns although the call it waited for is still blocked (with asyncio.to_thread
    it would join that thread at shutdown, for ever); the stuck thread is a daemon."""
    release = threading.Event()
    names: list[str] = []

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(off_loop(release.wait, "stuck-lag"), 0.2)
        names.extend(t.name for t in threading.enumerate() if t.daemon)

    runner = threading.Thread(target=asyncio.run, args=(main(),))
    runner.start()
    runner.join(timeout=10)
    stopped = not runner.is_alive()
    release.set()  # let the stuck thread end with the test
    assert stopped
    assert "stuck-lag" in names


def test_results_and_errors_come_back() -> None:
    """The value, or the exception, of the call reaches the awaiting task."""

    def boom() -> int:
        raise ValueError("boom")

    async def main() -> int:
        with pytest.raises(ValueError, match="boom"):
            await off_loop(boom, "err")
        return await off_loop(lambda: 41 + 1, "ok")

    assert asyncio.run(main()) == 42
