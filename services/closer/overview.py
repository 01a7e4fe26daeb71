"""The ops overview's numbers: today's counts, stations with SLA colours, charts and the grid map.

For people without Grafana. Numbers come from the closer's own database with bounded queries (open
cases, today's and the last day's reports, the last week's closures), never a full-table scan.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from statistics import median
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape
from sqlmodel import Session, col, func, select

from gridloop.clock import as_utc, utcnow
from schemas.reference import Jurisdiction
from services.closer import queue
from services.closer.context import Closer
from services.closer.models import Case, CaseReport
from services.closer.transitions import ACTIVE, OPEN

HOT_SPOT_CASES = 3
"""A place with this many open cases (or any common issue) is a hot spot on the map."""

PERIODS = {"today": 1, "7d": 7, "30d": 30}
"""The overview's period switch: today, or the last 7 or 30 local days (today included), in days."""


@dataclass
class StationRow:
    """One station's line in the overview table."""

    station_id: str
    name: str
    open: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    yellow: int = 0
    red: int = 0

    @property
    def colour(self) -> str:
        """Red if any case is overdue, yellow if any is near its deadline, else green."""
        return "red" if self.red else "yellow" if self.yellow else "green"


@dataclass
class Snapshot:
    """Everything the overview shows, computed at one instant."""

    at: datetime
    reports_today: int
    opened_today: int
    closed_today: int
    open_now: int
    red_now: int
    common_open: int
    stations: list[StationRow]
    intake_by_hour: list[tuple[datetime, int]]
    close_hours_by_category: list[tuple[str, float, int]]
    open_by_grid: dict[str, int]
    hot_spots: list[dict[str, Any]]
    period: str = "today"
    since: datetime | None = None
    reports_in_period: int = 0
    opened_in_period: int = 0
    closed_in_period: int = 0
    intake_by_day: list[tuple[datetime, int]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The snapshot for the JSON API."""
        return {
            "at": self.at.isoformat(),
            "today": {
                "reports": self.reports_today,
                "opened": self.opened_today,
                "closed": self.closed_today,
            },
            "period": {
                "name": self.period,
                "since": (self.since or self.at).isoformat(),
                "reports": self.reports_in_period,
                "opened": self.opened_in_period,
                "closed": self.closed_in_period,
            },
            "intake_by_day": [{"day": d.date().isoformat(), "reports": n} for d, n in self.intake_by_day],
            "open": self.open_now,
            "red": self.red_now,
            "common_issues": self.common_open,
            "stations": [
                {
                    "station_id": s.station_id,
                    "open": s.open,
                    "by_status": s.by_status,
                    "yellow": s.yellow,
                    "red": s.red,
                    "colour": s.colour,
                }
                for s in self.stations
            ],
            "intake_by_hour": [{"hour": h.isoformat(), "reports": n} for h, n in self.intake_by_hour],
            "close_hours_by_category": [
                {"category": c, "median_hours": round(h, 2), "cases": n}
                for c, h, n in self.close_hours_by_category
            ],
            "open_by_grid": self.open_by_grid,
            "hot_spots": self.hot_spots,
        }


def local_midnight(now: datetime, tz: str) -> datetime:
    """The start of today where the stations are."""
    local = as_utc(now).astimezone(ZoneInfo(tz))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def check_period(period: str) -> str:
    """`period` when the switch knows it (today, 7d, 30d); ValueError otherwise."""
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}")
    return period


def snapshot(
    session: Session,
    j: Jurisdiction,
    now: datetime,
    tz: str,
    stations: frozenset[str] | None = None,
    period: str = "today",
) -> Snapshot:
    """Compute the overview from the closer's database, of `stations` (the caller's scope, from
    services/closer/scope.py; None: every station): live numbers, and counts over `period`."""
    days = PERIODS[check_period(period)]
    today = local_midnight(now, tz)
    since = today - timedelta(days=days - 1)
    day_ago = now - timedelta(hours=24)

    def scoped(q: Any) -> Any:
        return q if stations is None else q.where(queue.in_scope(col(Case.station_id), stations))

    open_cases = list(session.exec(scoped(select(Case).where(col(Case.status).in_(OPEN)))))
    rows: dict[str, StationRow] = {
        s.id: StationRow(s.id, s.name_zh) for s in j.stations.values() if stations is None or s.id in stations
    }
    by_grid: Counter[str] = Counter()
    places: dict[tuple[float, float], dict[str, Any]] = {}
    for c in open_cases:
        row = rows.setdefault(c.station_id, StationRow(c.station_id, c.station_id))
        row.open += 1
        row.by_status[c.status] = row.by_status.get(c.status, 0) + 1
        if c.status in ACTIVE:
            colour = queue.colour_of(c, now)
            row.red += colour == "red"
            row.yellow += colour == "yellow"
        if c.grid_id:
            by_grid[c.grid_id] += 1
        if c.lat is not None and c.lon is not None:
            key = (round(c.lat, 4), round(c.lon, 4))
            spot = places.setdefault(
                key,
                {
                    "lat": key[0],
                    "lon": key[1],
                    "place": c.place_name or "",
                    "grid_id": c.grid_id,
                    "cases": 0,
                    "common": False,
                },
            )
            spot["cases"] += 1
            spot["common"] = spot["common"] or c.common_issue
    hot = [s for s in places.values() if s["cases"] >= HOT_SPOT_CASES or s["common"]]

    def intake_since(at: datetime) -> Any:
        intake = select(CaseReport.submitted_at).where(col(CaseReport.submitted_at) >= at)
        if stations is not None:  # the report's station is its case's
            intake = intake.join(Case, col(Case.case_id) == col(CaseReport.case_id))
        return intake

    recent = list(session.exec(scoped(intake_since(day_ago))))
    hours: Counter[datetime] = Counter()
    for at in recent:
        hours[as_utc(at).replace(minute=0, second=0, microsecond=0)] += 1
    first_hour = as_utc(now).replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    by_hour = [
        (first_hour + timedelta(hours=i), hours.get(first_hour + timedelta(hours=i), 0)) for i in range(24)
    ]
    reports_today = sum(1 for at in recent if as_utc(at) >= today)
    opened_today = session.exec(
        scoped(select(func.count()).select_from(Case).where(col(Case.opened_at) >= today))
    ).one()
    week = list(
        session.exec(
            scoped(
                select(Case.category, Case.submitted_at, Case.closed_at).where(
                    col(Case.closed_at) >= min(now - timedelta(days=7), as_utc(since))
                )
            )
        )
    )
    closed_today = sum(1 for _, _, closed in week if closed is not None and as_utc(closed) >= today)
    closed_in_period = sum(1 for _, _, closed in week if closed is not None and as_utc(closed) >= since)
    if days == 1:
        reports_in_period, opened_in_period, by_day = reports_today, int(opened_today), []
        week = [w for w in week if w[2] is not None and as_utc(w[2]) >= now - timedelta(days=7)]
    else:
        at_since = as_utc(since)
        days_counted: Counter[date] = Counter(
            as_utc(at).astimezone(ZoneInfo(tz)).date() for at in session.exec(scoped(intake_since(at_since)))
        )
        reports_in_period = sum(days_counted.values())
        opened_in_period = int(
            session.exec(
                scoped(select(func.count()).select_from(Case).where(col(Case.opened_at) >= at_since))
            ).one()
        )
        first = since.date()
        by_day = [
            (
                datetime.combine(first + timedelta(days=i), time(0), ZoneInfo(tz)),
                days_counted.get(first + timedelta(days=i), 0),
            )
            for i in range(days)
        ]
        week = [w for w in week if w[2] is not None and as_utc(w[2]) >= at_since]
    durations: defaultdict[str, list[float]] = defaultdict(list)
    for category, submitted, closed in week:
        if closed is not None:
            durations[category].append((as_utc(closed) - as_utc(submitted)).total_seconds() / 3600)
    close_hours = sorted(((c, median(v), len(v)) for c, v in durations.items()), key=lambda x: -x[1])
    busy_streets = {_street_of(j, c.station_id) for c in open_cases}
    return Snapshot(
        at=now,
        reports_today=reports_today,
        opened_today=int(opened_today),
        closed_today=closed_today,
        open_now=len(open_cases),
        red_now=sum(r.red for r in rows.values()),
        common_open=sum(1 for c in open_cases if c.common_issue),
        stations=sorted(
            # every station of a street with open cases; quiet streets stay out of the way
            (r for r in rows.values() if r.open or _street_of(j, r.station_id) in busy_streets),
            key=lambda r: (-r.red, -r.yellow, -r.open, r.station_id),
        ),
        intake_by_hour=by_hour,
        close_hours_by_category=close_hours,
        open_by_grid=dict(by_grid),
        hot_spots=sorted(hot, key=lambda s: -s["cases"])[:20],
        period=period,
        since=as_utc(since),
        reports_in_period=reports_in_period,
        opened_in_period=opened_in_period,
        closed_in_period=closed_in_period,
        intake_by_day=by_day,
    )


def _street_of(j: Jurisdiction, station_id: str) -> str | None:
    station = j.stations.get(station_id)
    return station.street_id if station else None


# ------------------------------------------------------------------------------------------ SVG


def _heat(n: int, most: int) -> str:
    """A fill from pale to deep red by the grid's share of open cases."""
    if n == 0:
        return "#eef3ee"
    level = 0.25 + 0.75 * (n / max(most, 1))
    return f"rgba(200, 40, 30, {level:.2f})"


def street_maps_svg(
    j: Jurisdiction,
    open_by_grid: dict[str, int],
    hot: list[dict[str, Any]],
    lang: str = "zh",
    streets: list[str] | None = None,
) -> Markup:
    """One map per street (of `streets`, the caller's; None: all; they lie kilometres apart), busiest
    street first."""
    shown = sorted(
        (st for st in j.streets.values() if streets is None or st.id in streets),
        key=lambda st: -sum(open_by_grid.get(g.id, 0) for g in j.grids_of(st.id)),
    )
    parts = []
    for street in shown:
        grids = j.grids_of(street.id)
        ids = {g.id for g in grids}
        mine = [h for h in hot if h.get("grid_id") in ids]
        parts.append(
            f'<figure class="street"><figcaption>{escape(street.name(lang))}</figcaption>'
            f"{grid_map_svg(grids, open_by_grid, mine, lang)}</figure>"
        )
    return Markup("".join(parts))


def grid_map_svg(
    grids: list[Any],
    open_by_grid: dict[str, int],
    hot: list[dict[str, Any]],
    lang: str = "zh",
    width: int = 560,
    height: int = 360,
) -> Markup:
    """Grid polygons coloured by open cases, hot spots as rings; no tiles."""
    rings = [(g, g.polygon) for g in grids]
    lons = [lon for _, ring in rings for lon, _ in ring]
    lats = [lat for _, ring in rings for _, lat in ring]
    if not lons:
        return Markup("")
    kx = math.cos(math.radians((min(lats) + max(lats)) / 2))
    span_x, span_y = (max(lons) - min(lons)) * kx, max(lats) - min(lats)
    pad = 10
    scale = min((width - 2 * pad) / span_x, (height - 2 * pad) / span_y)

    def xy(lon: float, lat: float) -> tuple[float, float]:
        return pad + (lon - min(lons)) * kx * scale, height - pad - (lat - min(lats)) * scale

    most = max(open_by_grid.values(), default=0)
    parts = [
        f'<svg class="gridmap" viewBox="0 0 {width} {height}" role="img" aria-label="grid map" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    for grid, ring in rings:
        n = open_by_grid.get(grid.id, 0)
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(lon, lat) for lon, lat in ring))
        cx = sum(x for x, _ in (xy(lon, lat) for lon, lat in ring)) / len(ring)
        cy = sum(y for _, y in (xy(lon, lat) for lon, lat in ring)) / len(ring)
        name = escape(grid.name(lang))
        parts.append(
            f'<g class="grid" data-grid="{escape(grid.id)}"><title>{name}: {n}</title>'
            f'<polygon points="{pts}" fill="{_heat(n, most)}" stroke="#456" stroke-width="1"/>'
            f'<text x="{cx:.0f}" y="{cy - 4:.0f}" class="gridlabel">{name}</text>'
            f'<text x="{cx:.0f}" y="{cy + 12:.0f}" class="gridcount">{n}</text></g>'
        )
    for spot in hot:
        x, y = xy(spot["lon"], spot["lat"])
        r = 5 + min(spot["cases"], 10)
        parts.append(
            f'<circle class="hotspot" cx="{x:.1f}" cy="{y:.1f}" r="{r}">'
            f"<title>{escape(spot['place'])}: {spot['cases']}</title></circle>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def bars_svg(values: list[tuple[str, float]], width: int = 560, height: int = 160, unit: str = "") -> Markup:
    """A vertical bar chart with labels under every fourth bar."""
    if not values:
        return Markup("")
    top = max((v for _, v in values), default=0) or 1
    bw = width / len(values)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height + 18}" role="img" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (label, v) in enumerate(values):
        h = (height - 4) * v / top
        parts.append(
            f'<rect x="{i * bw + 1:.1f}" y="{height - h:.1f}" width="{bw - 2:.1f}" height="{h:.1f}">'
            f"<title>{escape(label)}: {v:g}{escape(unit)}</title></rect>"
        )
        if i % 4 == 0:
            parts.append(f'<text x="{i * bw:.1f}" y="{height + 14}">{escape(label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def current(ctx: Closer, stations: frozenset[str] | None = None, period: str = "today") -> Snapshot:
    """The overview now of `stations` (the caller's scope; None: every station), from the database,
    with counts over `period` (PERIODS)."""
    with ctx.runtime.db.session() as session:
        return snapshot(session, ctx.jurisdiction, utcnow(), ctx.config.work_timezone, stations, period)
