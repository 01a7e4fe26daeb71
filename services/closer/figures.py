"""The assessment figures' arithmetic (考核): periods, rates, medians and rows; no I/O.

The definitions (docs/stats.md says them in words, services/closer/stats.py counts them in SQL):
- a case counts in the period (and month) of its `submitted_at`, in the stations' time zone;
- `on_time_ack_rate`: cases acknowledged by their `ack_due`, over the cases with an `ack_due` that
  were acknowledged or whose `ack_due` has passed (the others cannot be judged yet);
- `on_time_resolve_rate`: the same with `resolve_due` (extensions move it) and `resolved_at`;
- `median_hours_to_close`: the median of `closed_at - submitted_at` over the closed cases, in hours;
- `reopen_rate`: cases reopened at least once, over the cases resolved at least once;
- `avg_rating`: the mean of the riders' ratings (1 to 5) over the rated cases;
- rates are fractions from 0 to 1 rounded to 4 places; every rate and mean is null with nothing to rate.
"""

from __future__ import annotations

import calendar
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

GROUPS = ("station", "grid", "category", "platform", "month")
"""What a row of the figures is: one station, grid, category, rider's platform or month."""

MAX_DAYS = 366
"""The longest period one request may ask for, in days (a year, leap or not)."""

NO_PLATFORM = ""
"""The platform key of reports whose rider named none."""


class BadInput(ValueError):
    """A request the figures cannot answer: a stable code and a message for people (422)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Period:
    """Whole local days from `start` to `end` inclusive, and the UTC instants that bound them."""

    start: date
    end: date
    lo: datetime
    hi: datetime

    @property
    def days(self) -> int:
        """How many days the period spans."""
        return (self.end - self.start).days + 1


def local_day_start(day: date, tz: str) -> datetime:
    """The UTC instant a local day begins."""
    return datetime.combine(day, time(0), ZoneInfo(tz)).astimezone(UTC)


def period_of(start: date, end: date, tz: str) -> Period:
    """The period from `start` to `end` (local days, inclusive)."""
    return Period(start, end, local_day_start(start, tz), local_day_start(end + timedelta(days=1), tz))


def _day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        message = f"'{name}' must be a date like 2026-11-01, not {value[:40]!r}."
        raise BadInput("invalid_date", message) from None


def parse_period(start: str | None, end: str | None, today: date, tz: str) -> Period:
    """The period a request names (`from`, `to`: ISO dates); this month so far when both are missing."""
    if not start and not end:
        return period_of(today.replace(day=1), today, tz)
    if not start or not end:
        raise BadInput("invalid_range", "Give both 'from' and 'to', or neither (this month).")
    lo, hi = _day(start, "from"), _day(end, "to")
    if hi < lo:
        raise BadInput("invalid_range", "'to' is before 'from'.")
    if (hi - lo).days + 1 > MAX_DAYS:
        raise BadInput("invalid_range", f"Ask for at most {MAX_DAYS} days at a time.")
    return period_of(lo, hi, tz)


def check_group(by: str) -> str:
    """`by` when it is one of GROUPS; BadInput otherwise."""
    if by not in GROUPS:
        raise BadInput("invalid_group", f"'by' must be one of {', '.join(GROUPS)}.")
    return by


def months(period: Period, tz: str) -> list[tuple[str, Period]]:
    """The calendar months a period touches ("2026-11"), each cut to the period."""
    out = []
    first = period.start.replace(day=1)
    while first <= period.end:
        last = first.replace(day=calendar.monthrange(first.year, first.month)[1])
        out.append((f"{first:%Y-%m}", period_of(max(first, period.start), min(last, period.end), tz)))
        first = last + timedelta(days=1)
    return out


def this_month(today: date) -> tuple[date, date]:
    """From the first of this month to today."""
    return today.replace(day=1), today


def last_month(today: date) -> tuple[date, date]:
    """The whole previous month."""
    end = today.replace(day=1) - timedelta(days=1)
    return end.replace(day=1), end


def rate(part: int, whole: int) -> float | None:
    """part / whole rounded to 4 places; None when there is nothing to rate."""
    return round(part / whole, 4) if whole else None


def mean(total: int, count: int) -> float | None:
    """total / count rounded to 2 places; None when nothing was counted."""
    return round(total / count, 2) if count else None


def median_hours(durations: Iterable[float]) -> float | None:
    """The median of durations in hours, rounded to 2 places; None when there are none."""
    values = list(durations)
    return round(statistics.median(values), 2) if values else None


def hours_between(start: datetime, end: datetime) -> float:
    """Hours from start to end."""
    return (end - start).total_seconds() / 3600


@dataclass
class Tally:
    """One row's counts, as the queries return them (sums over the row's cases)."""

    key: str
    reports: int = 0
    cases: int = 0
    ack_on_time: int = 0
    ack_judged: int = 0
    resolve_on_time: int = 0
    resolve_judged: int = 0
    resolved: int = 0
    reopened: int = 0
    rating_sum: int = 0
    rated: int = 0
    closed: int = 0
    confirmed_fixes: int = 0
    returns: int = 0
    extensions: int = 0
    common_issues: int = 0
    nudges: int = 0
    median_hours_to_close: float | None = None

    @classmethod
    def of(cls, key: str, values: dict[str, Any]) -> Tally:
        """A tally from a query row's named values (NULL sums count as 0)."""
        t = cls(key)
        for f in fields(cls):
            if f.name in values and f.name != "key":
                v = values[f.name]
                if f.name == "median_hours_to_close":
                    t.median_hours_to_close = None if v is None else round(float(v), 2)
                else:
                    setattr(t, f.name, int(v or 0))
        return t


def added(tallies: list[Tally], key: str) -> Tally:
    """The sums of several tallies under one key (the median is not a sum: it is left None)."""
    total = Tally(key)
    for f in fields(Tally):
        if f.name not in ("key", "median_hours_to_close"):
            setattr(total, f.name, sum(getattr(t, f.name) for t in tallies))
    return total


FIGURES = (
    "reports",
    "cases",
    "on_time_ack_rate",
    "on_time_resolve_rate",
    "median_hours_to_close",
    "reopen_rate",
    "avg_rating",
    "returns",
    "extensions",
    "common_issues",
    "nudges",
    "closed",
    "confirmed_fixes",
)
"""A row's figures, in the order the API, the page and the exports give them."""


def figures(t: Tally) -> dict[str, Any]:
    """A row's figures from its tally."""
    return {
        "reports": t.reports,
        "cases": t.cases,
        "on_time_ack_rate": rate(t.ack_on_time, t.ack_judged),
        "on_time_resolve_rate": rate(t.resolve_on_time, t.resolve_judged),
        "median_hours_to_close": t.median_hours_to_close,
        "reopen_rate": rate(t.reopened, t.resolved),
        "avg_rating": mean(t.rating_sum, t.rated),
        "returns": t.returns,
        "extensions": t.extensions,
        "common_issues": t.common_issues,
        "nudges": t.nudges,
        "closed": t.closed,
        "confirmed_fixes": t.confirmed_fixes,
    }


def percent(value: float | None) -> str:
    """A rate as people read it: 87.5%, or a dash when there is nothing to rate."""
    return "—" if value is None else f"{value * 100:.1f}".removesuffix(".0") + "%"
