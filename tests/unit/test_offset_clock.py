"""The offset clock the closer's process-level tests run the closer on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.support.clocked import OffsetClock


def test_offset_clock_reads_the_file(tmp_path: Path) -> None:
    """The clock the closer process runs on follows the file the test writes."""
    path = tmp_path / "clock"
    path.write_text(str(3600 * 24))
    assert OffsetClock(path).now() - datetime.now(UTC) > timedelta(hours=23, minutes=59)
    path.write_text("garbage")
    assert abs(OffsetClock(path).now() - datetime.now(UTC)) < timedelta(seconds=5)
