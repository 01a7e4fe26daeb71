"""SLA arithmetic (pure): which clock a case counts on, deadlines, the 80 % warning point, colours.

A case counts on one of two clocks (`ClockMode`, chosen per category and priority in
categories.json, `clock_for`): `working` time is counted on the working-day calendar
(`services/closer/calendar.py`: official entries, then `chinese_calendar`, then an estimate) inside
its street's daily working hours (street.json), in the local time zone; `calendar` time runs
around the clock (24 小时处置: a gas leak on Friday night is due the same night). A hold (挂账)
stops either clock: its intervals are excluded. Deadlines count from the report's submission, not
from sign-for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from gridloop.clock import as_utc
from schemas.cases import ClockMode
from schemas.reference import DEFAULT_WORKING_HOURS, Category, Jurisdiction, parse_hours
from services.closer.calendar import Calendar

log = logging.getLogger(__name__)

Colour = Literal["green", "yellow", "red"]
Deadline = Literal["ack", "resolve"]
YELLOW_AT = 0.8
# a report of an unknown category (the centre triages it) still gets deadlines
FALLBACK_ACK_HOURS = 2.0
FALLBACK_RESOLVE_HOURS = 24.0
_MAX_DAYS = 3 * 366  # a calendar without a working day in three years is a configuration error

Pause = tuple[datetime, datetime | None]
"""A hold: from, to (None while it lasts)."""
_FAR = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)


@lru_cache(maxsize=1)
def lower_layers() -> Calendar:
    """The day calendar without official files (`chinese_calendar`, then the estimate): the default
    seam; the closer passes the calendar it built at start-up."""
    return Calendar()


def _lower_source(day: date) -> str:
    return lower_layers().day(day).source


class Clock:
    """Counting time on a clock: the running periods come from the subclass, holds are cut out."""

    def periods(self, start: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Running periods (UTC) that end after `start`, in order, clipped to begin no earlier."""
        raise NotImplementedError

    def add(self, start: datetime, hours: float, pauses: Iterable[Pause] = ()) -> datetime:
        """The moment `hours` of running time after `start`, not counting paused intervals."""
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
        """Running hours from `start` to `end`, not counting paused intervals (0 if end <= start)."""
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


class AroundTheClock(Clock):
    """Calendar time: every hour of every day counts (holds still stop it)."""

    def periods(self, start: datetime) -> Iterator[tuple[datetime, datetime]]:
        """One period from `start` on."""
        yield as_utc(start), _FAR


AROUND_THE_CLOCK = AroundTheClock()


class WorkCalendar(Clock):
    """Working time: which days are working days (and which source says so) and which hours count.

    `is_workday` and `day_source` are the seam to the day calendar: a day's type and the name of
    the source that decided it."""

    def __init__(
        self,
        hours: str | Sequence[tuple[time, time]] = DEFAULT_WORKING_HOURS,
        tz: str = "Asia/Shanghai",
        is_workday: Callable[[date], bool] | None = None,
        day_source: Callable[[date], str] | None = None,
    ) -> None:
        self.windows = parse_hours(hours) if isinstance(hours, str) else tuple(hours)
        self.tz = ZoneInfo(tz)
        self.is_workday = is_workday or lower_layers().is_workday
        self.day_source = day_source or _lower_source

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


def _normalise(pauses: Iterable[Pause], until: datetime | None = None) -> list[tuple[datetime, datetime]]:
    """Pauses as sorted, closed UTC intervals; an open pause runs until `until` (or forever)."""
    out = []
    for a, b in pauses:
        end = as_utc(b) if b is not None else (until or _FAR)
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


class StreetCalendars:
    """The working calendar of each street (its working hours from street.json).

    A case without a known street (triage, an unplaced report) counts on the default street's."""

    def __init__(
        self,
        jurisdiction: Jurisdiction,
        tz: str = "Asia/Shanghai",
        is_workday: Callable[[date], bool] | None = None,
        day_source: Callable[[date], str] | None = None,
    ) -> None:
        self.jurisdiction = jurisdiction
        self.tz = tz
        self.default = jurisdiction.default_street_id
        self.by_street = {
            s.id: WorkCalendar(s.working_hours, tz, is_workday, day_source)
            for s in jurisdiction.streets.values()
        }

    def on(self, days: Calendar) -> StreetCalendars:
        """The same streets' hours on another day calendar (a year being installed)."""
        return StreetCalendars(self.jurisdiction, self.tz, days.is_workday, lambda d: days.day(d).source)

    def of(self, street_id: str | None) -> WorkCalendar:
        """The working calendar a case of this street counts on."""
        return self.by_street.get(street_id or self.default) or self.by_street[self.default]


@dataclass(frozen=True)
class Budget:
    """Hours allowed for a case (to sign for, to resolve, plus approved extensions) and their clock."""

    ack_hours: float
    resolve_hours: float
    clock: ClockMode = "working"


def clock_for(category: Category | None, priority: str, danger_now: bool = False) -> ClockMode:
    """The clock a case counts on: the category's choice for its priority and "danger now" flag."""
    if category is None:
        return "working"
    p = priority if priority in category.sla.clock else "normal"
    return category.sla.clock_for(p, danger_now)


def budget(category: Category | None, priority: str, danger_now: bool = False) -> Budget:
    """The SLA budget of a category and priority (fallback for an unknown category)."""
    if category is None:
        return Budget(FALLBACK_ACK_HOURS, FALLBACK_RESOLVE_HOURS)
    p = priority if priority in category.sla.ack_hours else "normal"
    return Budget(category.sla.ack(p), category.sla.resolve(p), clock_for(category, p, danger_now))


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
    clock: ClockMode = "working",
) -> Plan:
    """Deadlines counted from submission on the case's clock (the street's working time, or around
    the clock); extensions move only the resolve deadline."""
    counter: Clock = cal if clock == "working" else AROUND_THE_CLOCK
    cuts = list(pauses)
    total = resolve_hours + extension_hours
    return Plan(
        ack_due=counter.add(submitted_at, ack_hours, cuts),
        ack_warn=counter.add(submitted_at, YELLOW_AT * ack_hours, cuts),
        resolve_due=counter.add(submitted_at, total, cuts),
        resolve_warn=counter.add(submitted_at, YELLOW_AT * total, cuts),
    )


@dataclass(frozen=True)
class DayCount:
    """A day a deadline crossed: a working day or not, and the calendar source that decided it."""

    day: date
    workday: bool
    source: str


@dataclass(frozen=True)
class WhatIf:
    """An operator's question answered: a report's budget, clock, deadlines and the days they cross."""

    budget: Budget
    plan: Plan
    days: tuple[DayCount, ...]


def what_if(
    cal: WorkCalendar, category: Category | None, priority: str, danger_now: bool, at: datetime
) -> WhatIf:
    """The deadlines of a report submitted `at`, and each local day from `at` to its resolve deadline."""
    b = budget(category, priority, danger_now)
    p = plan(cal, at, b.ack_hours, b.resolve_hours, clock=b.clock)
    first = as_utc(at).astimezone(cal.tz).date()
    last = p.resolve_due.astimezone(cal.tz).date()
    days = tuple(
        DayCount(d, cal.is_workday(d), cal.day_source(d))
        for d in (first + timedelta(days=i) for i in range((last - first).days + 1))
    )
    return WhatIf(b, p, days)


def colour(due: datetime | None, warn: datetime | None, now: datetime) -> Colour:
    """Green before the warning point (80 % of the allowed time), yellow after it, red past the deadline."""
    if due is None:
        return "green"
    if now >= as_utc(due):
        return "red"
    if warn is not None and now >= as_utc(warn):
        return "yellow"
    return "green"
