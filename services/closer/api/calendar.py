"""The admin API for the working calendar: read a year, install a published one (`gridloop calendar`
does the same from a shell)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from gridloop import metrics
from gridloop.clock import utcnow
from gridloop.errors import ApiError
from schemas.calendar import CalendarYear
from services.closer import calendarstore
from services.closer.calendar import Calendar
from services.closer.context import Ctx, Reader, Who

router = APIRouter(tags=["calendar"])


class DayView(BaseModel):
    """A named day: a day off or a make-up working day, and which layer decided it."""

    date: str
    working: bool
    source: str = Field(
        description='"official:<file>", "chinese_calendar", "estimate:holidays" or "weekday".'
    )
    estimated: bool
    name_zh: str | None
    name_en: str | None


class YearView(BaseModel):
    """Every named day of a year; other weekends are days off, other weekdays working days."""

    year: int
    estimated: bool = Field(description="No official schedule and no chinese_calendar data: an estimate.")
    confirmed_until: int = Field(description="The last year with official or chinese_calendar data.")
    days: list[DayView]


class Installed(BaseModel):
    """What an import did."""

    year: int
    days: int = Field(description="Official entries installed.")
    replanned: int = Field(description="Open cases whose deadlines moved.")
    confirmed_until: int


def year_view(calendar: Calendar, year: int) -> dict[str, Any]:
    """A year as the API and the CLI show it."""
    return {
        "year": year,
        "estimated": calendar.estimated(year),
        "confirmed_until": calendar.confirmed_until(),
        "days": [
            {
                "date": d.date.isoformat(),
                "working": d.working,
                "source": d.source,
                "estimated": d.estimated,
                "name_zh": d.name_zh,
                "name_en": d.name_en,
            }
            for d in calendar.special_days(year)
        ],
    }


def _year(year: int) -> None:
    if not 2000 <= year <= 2100:
        raise ApiError(404, "not_found", "No calendar for that year.")


@router.get("/api/v1/admin/calendar/{year}", response_model=YearView)
async def get_year(ctx: Ctx, who: Reader, year: int) -> dict[str, Any]:
    """The days off and make-up working days of a year, with their sources (any signed-in account)."""
    _year(year)
    return year_view(ctx.calendar, year)


@router.put("/api/v1/admin/calendar/{year}", response_model=Installed)
async def put_year(ctx: Ctx, who: Who, year: int, body: CalendarYear) -> dict[str, Any]:
    """Install a published year (admin): every replica uses it within a scheduler gauge interval, and
    the open cases whose deadlines it moves are re-planned now (timeline note, `case.replanned`)."""
    if who.role != "admin":
        raise ApiError(403, "forbidden", "Only an admin changes the calendar.")
    _year(year)
    if body.year != year:
        raise ApiError(422, "year_mismatch", f"The file is for {body.year}, not {year}.")
    now = utcnow()

    def work() -> calendarstore.Installed:
        with ctx.runtime.db.session(write=True) as session:
            return calendarstore.install(
                session,
                ctx.lifecycle,
                ctx.shipped_years,
                body,
                f"admin-api:{who.username}",
                who.username,
                now,
            )

    done = await asyncio.to_thread(work)
    # committed: this replica uses it at once, the others at their next refresh
    ctx.calendar.set_official(done.calendar.official)
    metrics.calendar_confirmed_until.set(ctx.calendar.confirmed_until_timestamp(ctx.config.work_timezone))
    ctx.changed()  # the re-planned cases' events go out and the live queue shows them now
    return {
        "year": done.year,
        "days": done.days,
        "replanned": done.replanned,
        "confirmed_until": ctx.calendar.confirmed_until(),
    }
