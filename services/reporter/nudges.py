"""The rider's 催办 rules, without I/O: once per 24 hours per report, only while the case is being worked."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from gridloop.clock import as_utc
from schemas.cases import CaseStatus

NUDGE_EVERY = timedelta(hours=24)
"""A report may be nudged once in this window."""
NUDGE_STATUSES = frozenset(
    {CaseStatus.NEW, CaseStatus.ACKNOWLEDGED, CaseStatus.DISPATCHED, CaseStatus.RETURNED}
)
"""Case states a nudge makes sense in: the clock runs (resolved waits for the rider's answer)."""


def next_nudge_at(last: datetime | None) -> datetime | None:
    """When the report may be nudged again (None: now)."""
    return None if last is None else as_utc(last) + NUDGE_EVERY


def wait_seconds(last: datetime | None, now: datetime) -> int:
    """Whole seconds until the next nudge is allowed (0: allowed now), rounded up, so a client that
    waits exactly Retry-After is never refused again."""
    allowed = next_nudge_at(last)
    if allowed is None or now >= allowed:
        return 0
    return max(1, math.ceil((allowed - now).total_seconds()))


def cutoff(now: datetime) -> datetime:
    """A report last nudged at or before this time may be nudged now."""
    return now - NUDGE_EVERY
