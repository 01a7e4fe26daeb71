"""The assessment figures page (/console/stats): period, grouping, table, charts and exports."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from markupsafe import Markup, escape

from gridloop.clock import utcnow
from services.closer import figures, stats
from services.closer.console.routes import lang_of, page_base, render, user
from services.closer.context import closer
from services.closer.scope import visible_stations

router = APIRouter(include_in_schema=False)

PERIODS = ("this_month", "last_month", "custom")
PLATFORM_FIGURES = ("reports", "cases", "closed", "confirmed_fixes", "common_issues")
"""The 骑手/平台 tab's columns: the platforms' tallies for 表彰 (no personal data)."""


def hbars_svg(values: list[tuple[str, float]], unit: str = "", width: int = 360) -> Markup:
    """A horizontal bar chart, one labelled bar per row (fits a phone; no script, no library)."""
    if not values:
        return Markup("")
    top = max(v for _, v in values) or 1
    row, label_w = 22, 120
    height = row * len(values) + 4
    parts = [
        f'<svg class="chart hbars" viewBox="0 0 {width} {height}" role="img" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, v) in enumerate(values):
        w = (width - label_w - 50) * v / top
        y = 2 + i * row
        parts.append(
            f'<text x="{label_w - 4}" y="{y + 15}" text-anchor="end">{escape(label[:12])}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}">'
            f"<title>{escape(label)}: {v:g}{escape(unit)}</title></rect>"
            f'<text x="{label_w + w + 4:.1f}" y="{y + 15}">{v:g}{escape(unit)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def chosen_period(params: dict[str, str], today: date) -> tuple[str, str | None, str | None]:
    """The picker's period and the dates it names (custom: as typed)."""
    period = params.get("period") or ("custom" if params.get("from") else "this_month")
    if period == "last_month":
        lo, hi = figures.last_month(today)
        return period, lo.isoformat(), hi.isoformat()
    if period == "custom":
        return period, params.get("from") or None, params.get("to") or None
    lo, hi = figures.this_month(today)
    return "this_month", lo.isoformat(), hi.isoformat()


@router.get("/console/stats", response_class=HTMLResponse)
async def stats_page(request: Request) -> Response:
    """The figures of a period by station, grid, category, platform (骑手/平台) or month."""
    who = await user(request)
    ctx = closer(request)
    t = lang_of(request)
    tz = ctx.config.work_timezone
    params = dict(request.query_params)
    today = utcnow().astimezone(ZoneInfo(tz)).date()
    period, start, end = chosen_period(params, today)
    by = params.get("by") or "station"
    values: dict[str, Any] = {
        **page_base(ctx, who),
        "nav": "stats",
        "back_url": str(request.url.path) + ("?" + request.url.query if request.url.query else ""),
        "periods": PERIODS,
        "period": period,
        "start": start or "",
        "end": end or "",
        "by": by,
        "groups": figures.GROUPS,
        "error": None,
        "result": None,
    }
    try:
        figures.check_group(by)
        chosen = figures.parse_period(start, end, today, tz)
    except figures.BadInput as exc:
        values["error"] = exc.message
        return render(request, "stats.html", status=422, **values)
    visible = visible_stations(who, ctx.jurisdiction)

    def work() -> stats.Stats:
        with ctx.runtime.db.session() as session:
            return stats.compute(session, chosen, by, visible, utcnow(), tz)

    result = await asyncio.to_thread(work)
    names = [stats.label(ctx.jurisdiction, by, k, t.lang) for k, _ in result.rows]
    query = {"from": chosen.start.isoformat(), "to": chosen.end.isoformat(), "by": by, "lang": t.lang}
    named = list(zip(names, (v for _, v in result.rows), strict=True))
    values.update(
        result=result,
        names=names,
        columns=PLATFORM_FIGURES if by == "platform" else figures.FIGURES,
        percent=figures.percent,
        csv_url="/api/v1/stats/export.csv?" + urlencode(query),
        xlsx_url="/api/v1/stats/export.xlsx?" + urlencode(query),
        cases_chart=hbars_svg([(n, float(v["cases"])) for n, v in named]),
        second_chart=(
            hbars_svg([(n, float(v["confirmed_fixes"])) for n, v in named])
            if by == "platform"
            else hbars_svg(
                [
                    (n, round(v["on_time_resolve_rate"] * 100, 1))
                    for n, v in named
                    if v["on_time_resolve_rate"] is not None
                ],
                unit="%",
            )
        ),
    )
    return render(request, "stats.html", **values)
