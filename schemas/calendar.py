"""The official working calendar of one year: statutory days off and make-up working days (调休上班).

One file per year, ``data/calendar/<year>.json`` (the shipped defaults), or a row of the closer's
``calendar_year`` table (a year imported without a release). Every entry has its names (zh, en);
every file names its source, the State Council notice (国务院办公厅关于 YYYY 年部分节假日安排的通知).
Days the file does not list follow the weekday rule (Monday to Friday work).
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DayKind = Literal["day_off", "workday"]


class CalendarError(ValueError):
    """A calendar file that cannot be used; the message names the file."""


class Notice(BaseModel):
    """Where a year's schedule comes from: the State Council notice (title, and number or URL)."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200, description="The notice's title.")
    number: str | None = Field(
        None, max_length=80, description="Its document number, e.g. 国办发明电〔2025〕7号."
    )
    url: str | None = Field(None, max_length=500, pattern=r"^https?://", description="Where it is published.")
    note: str | None = Field(None, max_length=500, description="How this file was made.")


class CalendarDay(BaseModel):
    """One official day: a statutory day off or a make-up working day, with its names."""

    model_config = ConfigDict(extra="forbid")

    date: date
    kind: DayKind
    name_zh: str = Field(min_length=1, max_length=40)
    name_en: str = Field(min_length=1, max_length=80)


class CalendarYear(BaseModel):
    """The official schedule of one year."""

    model_config = ConfigDict(extra="forbid")

    year: int = Field(ge=2000, le=2100)
    source: Notice
    days: list[CalendarDay] = Field(min_length=1, max_length=366)

    @model_validator(mode="after")
    def _consistent(self) -> CalendarYear:
        seen: set[date] = set()
        for day in self.days:
            if day.date.year != self.year:
                raise ValueError(f"{day.date} is not in {self.year}")
            if day.date in seen:
                raise ValueError(f"{day.date} is listed twice")
            seen.add(day.date)
            # a make-up working day is a weekend worked in exchange for a weekday off
            if day.kind == "workday" and day.date.weekday() < 5:
                raise ValueError(f"{day.date} is a make-up working day but not a Saturday or Sunday")
        self.days.sort(key=lambda d: d.date)
        return self


def parse_year(text: str | bytes, name: str) -> CalendarYear:
    """Validate one year's JSON; CalendarError naming `name` (the file) on any problem."""
    try:
        return CalendarYear.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}" for err in exc.errors()
        )
        raise CalendarError(f"{name}: {problems}") from exc


def load_calendar_dir(folder: Path) -> dict[int, CalendarYear]:
    """Every ``<year>.json`` of a folder (none if it does not exist); CalendarError names a bad file."""
    years: dict[int, CalendarYear] = {}
    if not folder.is_dir():
        return years
    for path in sorted(folder.glob("*.json")):
        try:
            text = path.read_bytes()
            json.loads(text)
        except (OSError, ValueError) as exc:
            raise CalendarError(f"{path}: not readable JSON ({exc})") from exc
        year = parse_year(text, str(path))
        if path.stem != str(year.year):
            raise CalendarError(f"{path}: holds year {year.year}; name it {year.year}.json")
        years[year.year] = year
    return years
