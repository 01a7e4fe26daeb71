"""The ops overview page (/overview): for people without Grafana; the numbers come from overview.py."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from services.closer import overview
from services.closer.console.routes import lang_of, page_base, render, user
from services.closer.context import closer
from services.closer.scope import visible_streets

router = APIRouter(tags=["overview"])


@router.get("/overview", response_class=HTMLResponse)
async def overview_page(request: Request) -> Response:
    """The ops overview page; `?part=body` returns just the live part (the page refreshes it)."""
    who = await user(request)
    ctx = closer(request)
    # the caller's streets only (services/closer/scope.py); a city account may pick one street
    street = request.query_params.get("street") or None
    stations = ctx.scope(who, None, street)
    period = request.query_params.get("period", "today")
    period = period if period in overview.PERIODS else "today"
    snap = await asyncio.to_thread(overview.current, ctx, stations, period)
    streets = [street] if street else visible_streets(who, ctx.jurisdiction)
    query = urlencode({k: v for k, v in (("street", street), ("period", period)) if v and v != "today"})
    tz = ZoneInfo(ctx.config.work_timezone)
    t = lang_of(request)
    values = {
        **page_base(ctx, who),
        "nav": "overview",
        "snap": snap,
        "back_url": "/overview" + (f"?{query}" if query else ""),
        "street": street,
        "period": period,
        "periods": tuple(overview.PERIODS),
        "grid_map": overview.street_maps_svg(
            ctx.jurisdiction, snap.open_by_grid, snap.hot_spots, lang_of(request).lang, streets
        ),
        "intake_chart": overview.bars_svg(
            [(h.astimezone(tz).strftime("%H:00"), float(n)) for h, n in snap.intake_by_hour]
            if period == "today"
            else [(d.strftime("%m-%d"), float(n)) for d, n in snap.intake_by_day]
        ),
        "close_chart": overview.bars_svg(
            [
                (
                    ctx.jurisdiction.categories[c].name(t.lang) if c in ctx.jurisdiction.categories else c,
                    round(h, 1),
                )
                for c, h, _ in snap.close_hours_by_category
            ],
            unit="h",
        ),
        "updated": snap.at.astimezone(tz).strftime("%H:%M:%S"),
    }
    name = "overview_body.html" if request.query_params.get("part") == "body" else "overview.html"
    return render(request, name, **values)
