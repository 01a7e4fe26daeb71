"""Which days are working days, in layers (pure): official entries, then `chinese_calendar`, then an estimate.

1. Official entries (`schemas/calendar.py`: the shipped ``data/calendar/<year>.json`` files and the
   years imported into the closer's database, which win over a shipped file of the same year).
2. `chinese_calendar` for the years it knows (1.11.0: 2004–2026).
3. Later (or earlier) years: an estimate from the `holidays` package, which computes China's
   festivals from the lunar calendar. Every day of such a year is marked ``estimated``: its make-up
   working days are not known until the State Council publishes them.

Days no layer names follow the weekday rule: Monday to Friday work. docs/architecture.md, SLA.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import chinese_calendar
import holidays
from chinese_calendar import constants as cc

from schemas.calendar import CalendarYear

CHINESE_CALENDAR = "chinese_calendar"
ESTIMATE = "estimate:holidays"
WEEKDAY = "weekday"


@dataclass(frozen=True)
class Day:
    """The answer for one day: working or not, which layer decided, the day's name if it has one."""

    date: date
    working: bool
    source: str
    name_zh: str | None = None
    name_en: str | None = None
    estimated: bool = False

    @property
    def special(self) -> bool:
        """A named day (a holiday or a make-up working day), not a plain weekday or weekend."""
        return self.name_zh is not None


@dataclass(frozen=True)
class Official:
    """One year of official entries and where they came from (a file name, or an import)."""

    origin: str
    year: CalendarYear


@cache
def _library_years() -> range:
    """The years `chinese_calendar` has tables for."""
    years = [d.year for d in cc.holidays]
    return range(min(years), max(years) + 1)


_CC_ZH = {h.value: h.chinese for h in cc.Holiday}


@cache
def _estimate(year: int) -> Mapping[date, tuple[str, str]]:
    """The festivals `holidays` computes for a year: date -> (name zh, name en)."""
    # both languages asked for by name: the default (None) is English on one install and Chinese on
    # another (seen on Python 3.13 with the same `holidays` version)
    en = holidays.country_holidays("CN", years=year, language="en_US")
    zh = holidays.country_holidays("CN", years=year, language="zh_CN")
    return {d: (zh.get(d) or name, name) for d, name in en.items()}


def _weekday(day: date, estimated: bool) -> Day:
    return Day(day, day.weekday() < 5, WEEKDAY, estimated=estimated)


def library_day(day: date) -> Day | None:
    """The `chinese_calendar` answer, or None for a year it does not know."""
    if day.year not in _library_years():
        return None
    if day in cc.holidays:
        name = cc.holidays[day]
        return Day(day, False, CHINESE_CALENDAR, _CC_ZH.get(name, name), name)
    if day in cc.workdays:
        name = cc.workdays[day]
        return Day(
            day, True, CHINESE_CALENDAR, f"{_CC_ZH.get(name, name)}调休上班", f"{name} make-up working day"
        )
    # the library's own answer for an unnamed day is the weekday rule too
    return Day(day, bool(chinese_calendar.is_workday(day)), WEEKDAY)


def estimated_day(day: date) -> Day:
    """The rule-based estimate: the festivals `holidays` computes are days off, weekends too."""
    names = _estimate(day.year).get(day)
    if names is not None:
        return Day(day, False, ESTIMATE, names[0], names[1], estimated=True)
    return _weekday(day, estimated=True)


class Calendar:
    """The layered calendar. Replace the official layer with `set_official` (an import, a refresh)."""

    def __init__(self, official: Mapping[int, Official] | None = None) -> None:
        self._official: dict[int, Official] = {}
        self._entries: dict[date, tuple[Official, str, str, bool]] = {}
        self._cache: dict[date, Day] = {}
        self.set_official(official or {})

    def set_official(self, official: Mapping[int, Official]) -> None:
        """Use these official years from now on (the answers of other years do not change)."""
        entries = {
            d.date: (o, d.name_zh, d.name_en, d.kind == "workday")
            for o in official.values()
            for d in o.year.days
        }
        # one assignment each, so a concurrent lookup sees the old or the new layer, never half
        self._official, self._entries, self._cache = dict(official), entries, {}

    @property
    def official(self) -> Mapping[int, Official]:
        """The official years in use."""
        return self._official

    def with_year(self, official: Official) -> Calendar:
        """A new calendar with this official year added (or replacing the one of that year)."""
        return Calendar({**self._official, official.year.year: official})

    def day(self, day: date) -> Day:
        """The answer for one day, from the first layer that knows its year."""
        hit = self._cache.get(day)
        if hit is None:
            hit = self._cache[day] = self._lookup(day)
        return hit

    def _lookup(self, day: date) -> Day:
        year = self._official.get(day.year)
        if year is not None:
            entry = self._entries.get(day)
            if entry is None:
                return _weekday(day, estimated=False)
            o, zh, en, working = entry
            return Day(day, working, f"official:{o.origin}", zh, en)
        return library_day(day) or estimated_day(day)

    def is_workday(self, day: date) -> bool:
        """Is this a working day (the day function of `sla.WorkCalendar`)?"""
        return self.day(day).working

    def estimated(self, year: int) -> bool:
        """Is this year only estimated (no official entries, not in `chinese_calendar`)?"""
        return year not in self._official and year not in _library_years()

    def confirmed_until(self) -> int:
        """The last year with official or `chinese_calendar` data."""
        return max([*self._official, _library_years()[-1]])

    def confirmed_until_timestamp(self, tz: str) -> float:
        """The end of the last confirmed year (midnight after 31 December, local time), as a Unix time."""
        end = datetime.combine(date(self.confirmed_until() + 1, 1, 1), time(0), ZoneInfo(tz))
        return end.timestamp()

    def special_days(self, year: int) -> Iterator[Day]:
        """Every named day of a year (days off and make-up working days), in date order."""
        day = date(year, 1, 1)
        while day.year == year:
            answer = self.day(day)
            if answer.special:
                yield answer
            day += timedelta(days=1)
