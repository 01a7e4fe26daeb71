"""When a failed delivery is tried again: exponential backoff with a cap, and when to give up; pure."""

from __future__ import annotations

from datetime import datetime, timedelta


def delay(attempts: int, base: float, cap: float) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: base, 2·base, 4·base, … at most cap."""
    if attempts < 1:
        return 0.0
    return float(min(base * 2 ** (attempts - 1), cap))


def after_failure(
    attempts: int, max_attempts: int, now: datetime, base: float, cap: float
) -> datetime | None:
    """The next attempt's time after `attempts` failed ones, or None: give up (failed)."""
    if attempts >= max_attempts:
        return None
    return now + timedelta(seconds=delay(attempts, base, cap))
