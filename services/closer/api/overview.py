"""The ops overview's numbers as JSON (the page is console/overview.py; the numbers overview.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.closer import overview
from services.closer.context import Ctx, Reader

router = APIRouter(tags=["overview"])


class Today(BaseModel):
    """Today's counts (local day of the stations)."""

    reports: int
    opened: int
    closed: int


class PeriodCounts(BaseModel):
    """Counts over the period asked for (today, 7d or 30d: local days, today included)."""

    name: str
    since: str
    reports: int
    opened: int
    closed: int


class DayCount(BaseModel):
    """Reports on one local day of the period (7d and 30d)."""

    day: str
    reports: int


class StationLine(BaseModel):
    """One station's open cases and SLA colour."""

    station_id: str
    open: int
    by_status: dict[str, int]
    yellow: int
    red: int
    colour: str


class HourCount(BaseModel):
    """Reports in one hour of the last day."""

    hour: str
    reports: int


class CloseTime(BaseModel):
    """Median hours from report to closure of a category over the last week."""

    category: str
    median_hours: float
    cases: int


class HotSpot(BaseModel):
    """A place with many open cases or a common issue."""

    lat: float
    lon: float
    place: str
    grid_id: str | None
    cases: int
    common: bool


class Overview(BaseModel):
    """Everything the overview shows, computed at one instant."""

    at: str
    today: Today
    period: PeriodCounts
    intake_by_day: list[DayCount]
    open: int
    red: int
    common_issues: int
    stations: list[StationLine]
    intake_by_hour: list[HourCount]
    close_hours_by_category: list[CloseTime]
    open_by_grid: dict[str, int]
    hot_spots: list[HotSpot]


@router.get("/api/v1/overview", response_model=Overview)
async def overview_json(
    ctx: Ctx,
    who: Reader,
    street: str | None = Query(None, max_length=40, description="A city filter."),
    period: str = Query("today", pattern="^(today|7d|30d)$", description="today, 7d or 30d."),
) -> dict[str, Any]:
    """The overview's numbers as JSON (a bearer token or the console's session), of the caller's
    stations and streets only (services/closer/scope.py); `period` sets the span of the period
    counts and, for 7d and 30d, the reports per day."""
    stations = ctx.scope(who, None, street)
    return (await asyncio.to_thread(overview.current, ctx, stations, period)).as_json()
