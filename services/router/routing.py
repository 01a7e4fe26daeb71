"""Pure routing decisions: which grid, which station, new case or merge, priority. No I/O here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from schemas.events import Decision, Priority
from schemas.reference import Category, Jurisdiction

COMMON_ISSUE_RIDERS = 3
COMMON_ISSUE_WINDOW = timedelta(hours=24)
_PRIORITY_ORDER: tuple[Priority, ...] = ("normal", "high", "urgent")


@dataclass(frozen=True)
class Candidate:
    """An open case that a report might merge into."""

    case_id: str
    category: str
    station_id: str
    lat: float | None
    lon: float | None
    place_id: str | None
    last_report_at: datetime
    riders_24h: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class ReportFacts:
    """What routing needs to know about a report."""

    category: str
    grid_id: str | None
    lat: float | None
    lon: float | None
    place_id: str | None
    danger_now: bool
    rider_ref: str | None
    submitted_at: datetime
    plus_one_case_id: str | None = None


@dataclass(frozen=True)
class Placement:
    """Where the report is: its grid and street, or why it has none."""

    grid_id: str | None
    street_id: str | None
    reason: str


@dataclass(frozen=True)
class RouteResult:
    """The whole decision, with the reasons in plain words."""

    decision: Decision
    station_id: str
    grid_id: str | None
    street_id: str | None
    rule_id: str | None
    merge_case_id: str | None
    distance_m: float | None
    priority: Priority
    reasons: list[str]

    @property
    def reason(self) -> str:
        """All reasons in one sentence list."""
        return "; ".join(self.reasons)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    r = 6_371_008.8
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


def place(j: Jurisdiction, facts: ReportFacts) -> Placement:
    """Find the report's grid: the code's grid, else point-in-polygon, else none."""
    if facts.grid_id and facts.grid_id in j.grids:
        grid = j.grids[facts.grid_id]
        return Placement(grid.id, grid.street_id, f"report code's place is in grid {grid.name_zh}")
    if facts.lat is None or facts.lon is None:
        return Placement(None, None, "no location and no known report code")
    found = j.grid_at(facts.lat, facts.lon)
    if found is None:
        return Placement(None, None, f"({facts.lat:.5f}, {facts.lon:.5f}) lies outside every grid")
    return Placement(found.id, found.street_id, f"the point lies in grid {found.name_zh}")


def _bump(priority: Priority, steps: int = 1) -> Priority:
    index = min(_PRIORITY_ORDER.index(priority) + steps, len(_PRIORITY_ORDER) - 1)
    return _PRIORITY_ORDER[index]


def priority_for(category: Category | None, danger_now: bool, distinct_riders: int) -> Priority:
    """Category default, raised to urgent by 'danger now', one step up for a common issue."""
    base: Priority = category.default_priority if category else "normal"
    if danger_now:
        base = "urgent"
    if distinct_riders >= COMMON_ISSUE_RIDERS:
        base = _bump(base)
    return base


def find_duplicate(
    category: Category, facts: ReportFacts, candidates: list[Candidate]
) -> tuple[Candidate, float] | None:
    """The nearest open case of the same category within radius and window (ties: the older id)."""
    window = timedelta(hours=category.dup_window_hours)
    best: tuple[Candidate, float] | None = None
    for cand in candidates:
        if cand.category != category.id or facts.submitted_at - cand.last_report_at > window:
            continue
        if facts.place_id is not None and cand.place_id == facts.place_id:
            dist = 0.0
        elif None in (facts.lat, facts.lon, cand.lat, cand.lon):
            continue
        else:
            dist = distance_m(facts.lat, facts.lon, cand.lat, cand.lon)  # type: ignore[arg-type]
        if dist > category.dup_radius_m:
            continue
        if best is None or (dist, cand.case_id) < (best[1], best[0].case_id):
            best = (cand, dist)
    return best


def decide(j: Jurisdiction, facts: ReportFacts, candidates: list[Candidate]) -> RouteResult:
    """Route one report: triage, merge into a nearby open case, or open a new case."""
    where = place(j, facts)
    reasons = [where.reason]
    category = j.categories.get(facts.category)
    centre = j.centre_for(where.street_id)
    if category is None:
        reasons.append(f"unknown category {facts.category!r}: sent to {centre.name_zh} for triage")
        return RouteResult(
            "triage", centre.id, where.grid_id, where.street_id, None, None, None, "normal", reasons
        )
    if where.grid_id is None:
        reasons.append(f"sent to {centre.name_zh} for triage")
        return RouteResult(
            "triage",
            centre.id,
            None,
            None,
            None,
            None,
            None,
            priority_for(category, facts.danger_now, 1),
            reasons,
        )
    station, rule = j.station_for(category.id, where.grid_id)
    if rule is not None:
        reasons.append(f"rule {rule.id}: {rule.reason_zh or rule.reason_en}")
    else:
        reasons.append(f"grid station {station.name_zh}")
    plus_one = next((c for c in candidates if c.case_id == facts.plus_one_case_id), None)
    dup = (plus_one, 0.0) if plus_one else find_duplicate(category, facts, candidates)
    if dup is not None:
        cand, dist = dup
        riders = set(cand.riders_24h)
        if facts.rider_ref:
            riders.add(facts.rider_ref)
        reasons.append(
            f"rider chose +1 on case {cand.case_id}"
            if plus_one
            else f"open case {cand.case_id} of the same category {dist:.0f} m away "
            f"(radius {category.dup_radius_m:.0f} m)"
        )
        return RouteResult(
            "merge",
            cand.station_id,
            where.grid_id,
            where.street_id,
            rule.id if rule else None,
            cand.case_id,
            dist,
            priority_for(category, facts.danger_now, len(riders)),
            reasons,
        )
    reasons.append("no open case of this category nearby: a new case")
    return RouteResult(
        "open",
        station.id,
        where.grid_id,
        where.street_id,
        rule.id if rule else None,
        None,
        None,
        priority_for(category, facts.danger_now, 1),
        reasons,
    )
