"""SLA arithmetic on the working-day calendar (pure): deadlines, the 80 % warning point, colours.

Working time is counted on the working-day calendar (`services/closer/calendar.py`: official
entries, then `chinese_calendar`, then an estimate) inside configurable daily working hours, in the
local time zone. A hold (挂账) stops the clock: its intervals are excluded. Deadlines count from the
report's submission, not from sign-for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from gridloop.clock import as_utc
from schemas.reference import Category
from services.closer.calendar import Calendar

Colour = Literal["green", "yellow", "red"]
Deadline = Literal["ack", "resolve"]
YELLOW_AT = 0.8
# a report of an unknown category (the centre triages it) still gets deadlines
FALLBACK_ACK_HOURS = 2.0
FALLBACK_RESOLVE_HOURS = 24.0
_MAX_DAYS = 3 * 366  # a calendar without a working day in three years is a configuration error

Pause = tuple[datetime, datetime | None]
"""A hold: from, to (None while it lasts)."""


def parse_hours(spec: str) -> tuple[tuple[time, time], ...]:
    """Parse working hours like "09:00-12:00,13:00-18:00" into ordered, non-overlapping windows."""
    windows: list[tuple[time, time]] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            a, b = (time.fromisoformat(x.strip()) for x in part.split("-"))
        except ValueError as exc:
            raise ValueError(f"working hours {part!r} are not HH:MM-HH:MM") from exc
        if a >= b:
            raise ValueError(f"working hours {part!r} end before they start")
        if windows and a < windows[-1][1]:
            raise ValueError(f"working hours {part!r} overlap or are out of order")
        windows.append((a, b))
    if not windows:
        raise ValueError("working hours are empty")
    return tuple(windows)


class WorkCalendar:
    """Working time: which days are working days and which hours of them count."""

    def __init__(
        self,
        hours: str | Sequence[tuple[time, time]] = "09:00-12:00,13:00-18:00",
        tz: str = "Asia/Shanghai",
        is_workday: Callable[[date], bool] | None = None,
    ) -> None:
        self.windows = parse_hours(hours) if isinstance(hours, str) else tuple(hours)
        self.tz = ZoneInfo(tz)
        # the closer passes its start-up calendar's lookup; without one, the layers below the official data
        self.is_workday = is_workday or Calendar().is_workday

    def periods(self, start: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Working periods (UTC) that end after `start`, in order, clipped to begin no earlier."""
        start = as_utc(start)
        day = start.astimezone(self.tz).date()
        for _ in range(_MAX_DAYS):
            if self.is_workday(day):
                for a, b in self.windows:
                    lo = datetime.combine(day, a, self.tz).astimezone(UTC)
                    hi = datetime.combine(day, b, self.tz).astimezone(UTC)
                    if hi <= start:
                        continue
                    yield max(lo, start), hi
            day += timedelta(days=1)
        raise ValueError("no working day within three years: check the calendar")

    def add(self, start: datetime, hours: float, pauses: Iterable[Pause] = ()) -> datetime:
        """The moment `hours` of working time after `start`, not counting paused intervals."""
        remaining = timedelta(hours=hours)
        cuts = _normalise(pauses)
        if remaining <= timedelta(0):
            return _next_running(as_utc(start), cuts)
        for lo, hi in self.periods(start):
            for a, b in _subtract(lo, hi, cuts):
                if b - a >= remaining:
                    return a + remaining
                remaining -= b - a
        raise AssertionError("unreachable: periods() raises first")

    def between(self, start: datetime, end: datetime, pauses: Iterable[Pause] = ()) -> float:
        """Working hours from `start` to `end`, not counting paused intervals (0 if end <= start)."""
        start, end = as_utc(start), as_utc(end)
        if end <= start:
            return 0.0
        cuts = _normalise(pauses, until=end)
        total = timedelta(0)
        for lo, hi in self.periods(start):
            if lo >= end:
                break
            for a, b in _subtract(lo, min(hi, end), cuts):
                total += b - a
        return total.total_seconds() / 3600


def _normalise(pauses: Iterable[Pause], until: datetime | None = None) -> list[tuple[datetime, datetime]]:
    """Pauses as sorted, closed UTC intervals; an open pause runs until `until` (or forever)."""
    far = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)
    out = []
    for a, b in pauses:
        end = as_utc(b) if b is not None else (until or far)
        if end > as_utc(a):
            out.append((as_utc(a), end))
    return sorted(out)


def _subtract(
    lo: datetime, hi: datetime, cuts: list[tuple[datetime, datetime]]
) -> Iterator[tuple[datetime, datetime]]:
    """The parts of [lo, hi) not covered by any cut."""
    cur = lo
    for a, b in cuts:
        if b <= cur or a >= hi:
            continue
        if a > cur:
            yield cur, a
        cur = max(cur, b)
        if cur >= hi:
            return
    if cur < hi:
        yield cur, hi


def _next_running(at: datetime, cuts: list[tuple[datetime, datetime]]) -> datetime:
    for a, b in cuts:
        if a <= at < b:
            at = b
    return at


@dataclass(frozen=True)
class Budget:
    """Working hours allowed for a case: to sign for, and to resolve (plus approved extensions)."""

    ack_hours: float
    resolve_hours: float


def budget(category: Category | None, priority: str) -> Budget:
    """The SLA budget of a category and priority (fallback for an unknown category)."""
    if category is None:
        return Budget(FALLBACK_ACK_HOURS, FALLBACK_RESOLVE_HOURS)
    p = priority if priority in category.sla.ack_hours else "normal"
    return Budget(category.sla.ack(p), category.sla.resolve(p))


@dataclass(frozen=True)
class Plan:
    """A case's deadlines and their 80 % warning points (UTC)."""

    ack_due: datetime
    ack_warn: datetime
    resolve_due: datetime
    resolve_warn: datetime


def plan(
    cal: WorkCalendar,
    submitted_at: datetime,
    ack_hours: float,
    resolve_hours: float,
    extension_hours: float = 0.0,
    pauses: Iterable[Pause] = (),
) -> Plan:
    """Deadlines counted in working time from submission; extensions move only the resolve deadline."""
    cuts = list(pauses)
    total = resolve_hours + extension_hours
    return Plan(
        ack_due=cal.add(submitted_at, ack_hours, cuts),
        ack_warn=cal.add(submitted_at, YELLOW_AT * ack_hours, cuts),
        resolve_due=cal.add(submitted_at, total, cuts),
        resolve_warn=cal.add(submitted_at, YELLOW_AT * total, cuts),
    )


def colour(due: datetime | None, warn: datetime | None, now: datetime) -> Colour:
    """Green before the warning point (80 % of the allowed time), yellow after it, red past the deadline."""
    if due is None:
        return "green"
    if now >= as_utc(due):
        return "red"
    if warn is not None and now >= as_utc(warn):
        return "yellow"
    return "green"
