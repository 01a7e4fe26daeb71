"""Weeks of simulated, deterministic demo history (`gridloop demo load --history 30d`): one generator
every service reads, each writing its own rows (the closer its cases, reports and timeline; the
reporter its reports, their public steps, case views and feedback); the router keeps nothing of
closed cases.

The history is anchored to the local day it is loaded on: the same day gives the same cases with the
same ids (loading twice adds nothing), and most of it is closed, in lifecycle order: opened, returned
and reassigned now and then, acknowledged, dispatched, an extension granted now and then, resolved,
reopened by a rider now and then and resolved again, then closed by a rider's confirmation (with a
rating) or automatically. Some deadlines are missed. The last two days still have open cases.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from schemas.reference import Jurisdiction, Place

PLATFORMS = (("美团", 6), ("饿了么", 5), ("顺丰", 2), ("京东", 1), ("达达", 1), (None, 3))
"""The riders' platforms and how often each reports (None: the rider named none)."""

CATEGORIES = (
    ("shared_bikes", 4),
    ("sanitation", 4),
    ("manhole_cover", 2),
    ("facility_damage", 2),
    ("fire_lane_blocked", 1),
)
"""The history's categories and their weights (those the reference data lacks are skipped)."""

ACK_HOURS = 2.0
RESOLVE_HOURS = 24.0
EXTENSION_HOURS = 24.0
RIDERS = 40
"""Distinct demo riders (pseudonymous refs `demo-rider-NN`)."""


def parse_days(spec: str) -> int:
    """Days of history from "30d", "4w" or "30"; ValueError for anything else or more than a year."""
    m = re.fullmatch(r"(\d{1,3})([dw]?)", spec.strip())
    if not m:
        raise ValueError(f"history like 30d or 4w, not {spec!r}")
    days = int(m.group(1)) * (7 if m.group(2) == "w" else 1)
    if not 1 <= days <= 366:
        raise ValueError("history of 1 to 366 days")
    return days


@dataclass
class Step:
    """One timeline step: action, the state after it, when, by whom, a note."""

    action: str
    status: str
    at: datetime
    actor: str = "system"
    note: str | None = None


@dataclass
class HistoricReport:
    """A rider's report in a historic case, and the rider's answer once resolved."""

    report_id: str
    rider_ref: str
    platform: str | None
    submitted_at: datetime
    fixed: bool | None = None
    rating: int | None = None
    feedback_at: datetime | None = None


@dataclass
class HistoricCase:
    """A case of the history with every milestone the closer keeps, its reports and timeline."""

    case_id: str
    station_id: str
    street_id: str
    grid_id: str
    category: str
    place: Place
    submitted_at: datetime
    status: str
    ack_due: datetime
    resolve_due: datetime
    acknowledged_at: datetime | None = None
    dispatched_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    returned_at: datetime | None = None
    reopened_at: datetime | None = None
    moves: int = 0
    extensions_granted: int = 0
    reopen_count: int = 0
    rating: int | None = None
    common_issue: bool = False
    nudges: int = 0
    assignee: str | None = None
    reports: list[HistoricReport] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)

    @property
    def updated_at(self) -> datetime:
        """The last step's time."""
        return self.steps[-1].at

    @property
    def version(self) -> int:
        """The case version after its steps (one per step)."""
        return len(self.steps)


def _case(
    rng: random.Random, n: int, day: date, j: Jurisdiction, places: list[Place], now: datetime, tz: ZoneInfo
) -> HistoricCase | None:
    place = rng.choice(places)
    grid = j.grids[place.grid_id]
    station = j.stations[grid.station_id]
    categories = [(c, w) for c, w in CATEGORIES if c in j.categories] or [(next(iter(j.categories)), 1)]
    category = rng.choices([c for c, _ in categories], [w for _, w in categories])[0]
    # in UTC, as the services keep every time (SQLite drops an offset without converting)
    at = (datetime.combine(day, time(7), tz) + timedelta(minutes=rng.randrange(0, 14 * 60))).astimezone(UTC)
    if at >= now - timedelta(minutes=30):
        return None
    c = HistoricCase(
        case_id=f"H{day:%Y%m%d}{n:04d}",
        station_id=station.id,
        street_id=station.street_id,
        grid_id=grid.id,
        category=category,
        place=place,
        submitted_at=at,
        status="new",
        ack_due=at + timedelta(hours=ACK_HOURS),
        resolve_due=at + timedelta(hours=RESOLVE_HOURS),
    )
    platforms, weights = [p for p, _ in PLATFORMS], [w for _, w in PLATFORMS]
    for k in range(rng.choices((1, 2, 3), (7, 2, 1))[0]):
        if at + timedelta(minutes=20 * k) >= now:
            break
        c.reports.append(
            HistoricReport(
                report_id=f"R{c.case_id[1:]}{k}",
                rider_ref=f"demo-rider-{rng.randrange(RIDERS):02d}",
                platform=rng.choices(platforms, weights)[0],
                submitted_at=at + timedelta(minutes=20 * k),
            )
        )
    c.common_issue = len({r.rider_ref for r in c.reports}) >= 3
    c.steps.append(Step("opened", "new", at, note="历史演示数据 (demo history)"))
    staff = station.id  # the demo accounts are named after their stations
    centre = j.streets[station.street_id].centre_station_id
    t = at
    if rng.random() < 0.06 and at + timedelta(hours=2) < now:  # returned as not theirs, sent back
        t += timedelta(minutes=rng.randrange(10, 60))
        c.returned_at, c.moves = t, 1
        c.steps.append(Step("return", "returned", t, staff, "不属于本站 (not ours)"))
        t += timedelta(minutes=rng.randrange(10, 60))
        c.steps.append(Step("send_back", "new", t, centre, "请继续处置 (please handle it)"))
    late_ack = rng.random() < 0.12
    t += timedelta(hours=rng.uniform(2.2, 5) if late_ack else rng.uniform(0.1, 1.6))
    if t >= now:
        return c
    c.acknowledged_at, c.status = t, "acknowledged"
    c.steps.append(Step("acknowledge", "acknowledged", t, staff))
    t += timedelta(minutes=rng.randrange(5, 60))
    if t >= now:
        return c
    c.dispatched_at, c.status, c.assignee = t, "dispatched", "网格员"
    c.steps.append(Step("dispatch", "dispatched", t, staff))
    if rng.random() < 0.07 and t + timedelta(hours=7) < now:
        t += timedelta(hours=rng.uniform(1, 6))
        c.extensions_granted = 1
        c.resolve_due += timedelta(hours=EXTENSION_HOURS)
        c.steps.append(
            Step("request_extension", "dispatched", t, staff, "需要协调物业 (waiting for the estate)")
        )
        c.steps.append(Step("approve_extension", "dispatched", t + timedelta(minutes=40), centre))
        t += timedelta(minutes=40)
    late = rng.random() < 0.15
    t = max(t, at) + timedelta(hours=rng.uniform(25, 40) if late else rng.uniform(2, 20))
    if c.extensions_granted:
        t += timedelta(hours=rng.uniform(0, 20))
    if t >= now:
        if rng.random() < 0.4:
            c.nudges = 1
        return c
    c.resolved_at, c.status = t, "resolved"
    c.steps.append(Step("resolve", "resolved", t, staff, "已处置 (fixed)"))
    if rng.random() < 0.05:  # a rider says it is not fixed: reopened, resolved again
        t += timedelta(hours=rng.uniform(1, 8))
        c.reports[0].fixed, c.reports[0].rating, c.reports[0].feedback_at = False, 1, t
        c.reopened_at, c.reopen_count, c.status = t, 1, "dispatched"
        c.steps.append(Step("reopen", "dispatched", t, note="骑手反馈未解决 (rider says not fixed)"))
        t += timedelta(hours=rng.uniform(2, 12))
        if t >= now:
            return c
        c.resolved_at, c.status = t, "resolved"
        c.steps.append(Step("resolve", "resolved", t, staff, "已再次处置 (fixed again)"))
    t += timedelta(hours=rng.uniform(1, 60))
    if t >= now:
        return c
    c.closed_at, c.status = t, "closed"
    answer = c.reports[-1] if c.reopen_count else c.reports[0]
    if rng.random() < 0.65:
        answer.fixed, answer.feedback_at = True, t
        answer.rating = c.rating = rng.choices((5, 4, 3, 2), (6, 3, 1, 1))[0]
        c.steps.append(Step("confirm", "closed", t, note="骑手确认解决 (rider confirmed)"))
    else:
        c.steps.append(Step("auto_close", "closed", t, note="到期自动结案 (closed automatically)"))
    return c


def history(j: Jurisdiction, places: list[Place], days: int, now: datetime, tz: str) -> list[HistoricCase]:
    """The demo history of the `days` local days up to today (today included), the same for one day."""
    zone = ZoneInfo(tz)
    today = now.astimezone(zone).date()
    usable = [p for p in places if p.grid_id in j.grids and j.grids[p.grid_id].station_id in j.stations]
    out: list[HistoricCase] = []
    for back in range(days - 1, -1, -1):
        day = today - timedelta(days=back)
        rng = random.Random(f"gridloop-demo-history-{day.isoformat()}")
        per_day = rng.randrange(18, 30) if day.weekday() < 5 else rng.randrange(8, 15)
        for n in range(per_day):
            c = _case(rng, n, day, j, usable, now, zone)
            if c is not None:
                out.append(c)
    return out
