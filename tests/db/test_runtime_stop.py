"""A service's runtime stops in bounded time even when a background task swallows its cancellation
(Python 3.11's asyncio.wait_for can, when the awaited call finishes as the cancel arrives: seen as a
closer whose shutdown never ended in the full suite)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from gridloop import migrate, service
from gridloop.service import Runtime
from gridloop.settings import Settings
from services.reporter.models import PLUMBING, Base


def test_a_task_that_swallows_its_cancellation_cannot_hold_the_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """stop() cancels, waits at most STOP_DEADLINE, names the task left behind, and finishes the rest
    (relay stopped, leadership released, pool closed); the broker loop ends on the stopping flag."""
    monkeypatch.setattr(service, "STOP_DEADLINE", 0.5)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    migrate.upgrade("reporter", url)
    settings = Settings(database_url=url, var_dir=tmp_path, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    runtime = Runtime("reporter", Base.metadata, PLUMBING, settings)
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue  # what a swallowed cancellation looks like from here

    runtime.background.append(stubborn)

    async def main() -> None:
        await runtime.start()
        await asyncio.sleep(0.2)
        with caplog.at_level(logging.WARNING, logger="gridloop.service"):
            await runtime.stop()  # before the deadline this never returned
        assert runtime.stopping
        assert runtime.relay._task is not None and runtime.relay._task.done()
        release.set()

    asyncio.run(main())
    assert [r.getMessage() for r in caplog.records if "did not stop" in r.getMessage()] == [
        "reporter: reporter-stubborn did not stop within 0.5 s; left behind"
    ]
