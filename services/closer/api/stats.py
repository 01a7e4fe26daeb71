"""The assessment figures (考核) over HTTP: JSON, CSV and XLSX (numbers: stats.py; arithmetic: figures.py)."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from gridloop.clock import utcnow
from gridloop.errors import ApiError
from gridloop.tokens import Principal
from services.closer import figures, stats, statsexport
from services.closer.context import Closer, Ctx, Reader
from services.closer.scope import visible_stations

router = APIRouter(tags=["stats"])


class Figures(BaseModel):
    """One row's figures (docs/stats.md defines each; rates are 0 to 1, null with nothing to rate)."""

    reports: int = Field(description="Reports in the row's cases (merged ones too); by platform: its own.")
    cases: int = Field(description="Cases submitted in the period.")
    on_time_ack_rate: float | None = Field(
        description="Acknowledged by ack_due, over cases acknowledged or with ack_due passed."
    )
    on_time_resolve_rate: float | None = Field(
        description="Resolved by resolve_due, over cases resolved or with resolve_due passed."
    )
    median_hours_to_close: float | None = Field(description="Median hours from submitted to closed.")
    reopen_rate: float | None = Field(description="Reopened at least once, over cases ever resolved.")
    avg_rating: float | None = Field(description="The riders' mean rating (1 to 5) over rated cases.")
    returns: int = Field(description="Cases returned by their station at least once.")
    extensions: int = Field(description="Extensions granted.")
    common_issues: int = Field(description="Cases marked a common issue.")
    nudges: int = Field(description="Riders' nudges (催办).")
    closed: int = Field(description="Cases closed.")
    confirmed_fixes: int = Field(description="Cases closed with a rider's confirmation that it is fixed.")


class Row(Figures):
    """One group's figures."""

    key: str = Field(description="The station, grid, category or platform id, or the month (YYYY-MM).")
    name: str = Field(description="Its name for people (Chinese).")


class StatsAnswer(BaseModel):
    """A period's figures grouped one way, and their total."""

    from_: str = Field(alias="from")
    to: str
    by: str
    timezone: str
    rows: list[Row]
    total: Figures


def _compute(ctx: Closer, who: Principal, start: str | None, end: str | None, by: str) -> stats.Stats:
    tz = ctx.config.work_timezone
    try:
        figures.check_group(by)
        period = figures.parse_period(start, end, _today(tz), tz)
    except figures.BadInput as exc:
        raise ApiError(422, exc.code, exc.message) from None
    visible = visible_stations(who, ctx.jurisdiction)
    with ctx.runtime.db.session() as session:
        return stats.compute(session, period, by, visible, utcnow(), tz)


def _today(tz: str) -> date:
    return utcnow().astimezone(ZoneInfo(tz)).date()


_FROM = Query(None, alias="from", max_length=40, description="First local day (YYYY-MM-DD), inclusive.")
_TO = Query(
    None, alias="to", max_length=40, description="Last local day (YYYY-MM-DD), inclusive; at most 366 days."
)
_BY = Query("station", max_length=20, description="station, grid, category, platform or month.")


@router.get("/api/v1/stats", response_model=StatsAnswer, response_model_by_alias=True)
async def get_stats(
    ctx: Ctx, who: Reader, start: str | None = _FROM, end: str | None = _TO, by: str = _BY
) -> dict[str, Any]:
    """The assessment figures of a period (this month when no dates), one row per group; staff see
    their own stations only."""
    result = await asyncio.to_thread(_compute, ctx, who, start, end, by)
    return stats.as_json(result, ctx.jurisdiction, ctx.config.work_timezone)


def _scope_name(who: Principal) -> str:
    return "-".join(who.stations) if who.role == "staff" else "all"


@router.get(
    "/api/v1/stats/export.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "CSV, UTF-8 with BOM."}},
)
async def export_csv(
    ctx: Ctx,
    who: Reader,
    start: str | None = _FROM,
    end: str | None = _TO,
    by: str = _BY,
    lang: str = Query("zh", pattern="^(zh|en)$"),
) -> Response:
    """The figures as CSV (one row per group, then the total; no personal data)."""
    result = await asyncio.to_thread(_compute, ctx, who, start, end, by)
    name = statsexport.filename(result, _scope_name(who), "csv")
    return Response(
        statsexport.as_csv(result, ctx.jurisdiction, lang),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@router.get(
    "/api/v1/stats/export.xlsx",
    response_class=Response,
    responses={200: {"content": {XLSX: {}}, "description": "An Excel workbook."}},
)
async def export_xlsx(
    ctx: Ctx,
    who: Reader,
    start: str | None = _FROM,
    end: str | None = _TO,
    by: str = _BY,
    lang: str = Query("zh", pattern="^(zh|en)$"),
) -> Response:
    """The figures as an XLSX workbook (one sheet)."""
    result = await asyncio.to_thread(_compute, ctx, who, start, end, by)
    body = await asyncio.to_thread(statsexport.as_xlsx, result, ctx.jurisdiction, lang)
    name = statsexport.filename(result, _scope_name(who), "xlsx")
    return Response(
        body,
        media_type=XLSX,
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )
