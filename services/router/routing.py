"""Pure routing decisions: which grid, which station, new case or merge, common issue, priority.

No I/O here: the service loads candidates and history from its database and hands them in, so every
rule below is tested without a database or a broker.

The rules, in the order they apply:

1. Placement. A report code's place gives the grid. Without one, the point is looked up in every
   grid (``Jurisdiction.grid_at``: a point on a shared border lands in the grid whose id sorts
   first). No grid, or no location at all: the centre's triage queue.
2. Station. The grid's station, unless a routing rule for the category names another (a grid rule
   wins over a street-wide one).
3. Unknown category: triage, even when the place is known (nobody knows whose job it is).
4. Duplicates. An open case of the same category whose anchor (its first report's point or place)
   lies within the category's radius, and which had a report within the category's window, takes
   the report (``merge``); the nearest wins, ties go to the lower case id. A '+1' on an open case
   merges into that case. Triage cases never take merges.
5. Common issue (共性问题): three or more distinct riders on one case within any 24 h window. The
   flag is sticky: once set it stays.
6. Priority: the category's default; 'danger now' makes it urgent; a common issue and a recurring
   hazard (a case of the same category at the same place opened in the last 30 days, rejected
   ones aside) each raise it one step, capped at urgent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from schemas.cases import CaseStatus, Priority, raise_priority
from schemas.events import Decision
from schemas.reference import Category, Jurisdiction, RoutingRule, Station

COMMON_ISSUE_RIDERS = 3
COMMON_ISSUE_WINDOW = timedelta(hours=24)
RECURRING_WINDOW = timedelta(days=30)
_METRES_PER_DEGREE_LAT = 111_320.0


@dataclass(frozen=True)
class Reason:
    """One step of a decision in words a supervisor understands, in Chinese and English."""

    zh: str
    en: str


@dataclass(frozen=True)
class Candidate:
    """A case a report might merge into, or (closed) evidence of a recurring hazard."""

    case_id: str
    category: str
    station_id: str
    lat: float | None
    lon: float | None
    place_id: str | None
    last_report_at: datetime
    opened_at: datetime | None = None
    open: bool = True
    status: str = CaseStatus.NEW


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
    place_name: str | None = None


@dataclass(frozen=True)
class Placement:
    """Where the report is: its grid and street, or why it has none."""

    grid_id: str | None
    street_id: str | None
    reason: Reason


@dataclass(frozen=True)
class RouteResult:
    """The decision for one report (priority comes later, once the case's riders are known)."""

    decision: Decision
    station_id: str
    grid_id: str | None
    street_id: str | None
    rule_id: str | None
    merge_case_id: str | None
    distance_m: float | None
    reasons: list[Reason]


@dataclass(frozen=True)
class Assessment:
    """A case's standing after a report: its riders, common-issue flag and the report's priority."""

    distinct_riders: int
    common_issue: bool
    recurring: bool
    priority: Priority
    reasons: list[Reason] = field(default_factory=list)


def reason_text(reasons: Iterable[Reason], lang: str = "zh") -> str:
    """All reasons as one text in one language."""
    if lang.startswith("en"):
        return "; ".join(r.en for r in reasons)
    return "；".join(r.zh for r in reasons)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    r = 6_371_008.8
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(min(1.0, math.sqrt(a)))


def bounding_box(lat: float, lon: float, radius_m: float) -> tuple[float, float, float, float]:
    """(min_lat, max_lat, min_lon, max_lon) enclosing a circle, with a margin; for index queries."""
    margin = radius_m * 1.1 + 1.0
    dlat = margin / _METRES_PER_DEGREE_LAT
    dlon = margin / (_METRES_PER_DEGREE_LAT * max(math.cos(math.radians(lat)), 0.01))
    return lat - dlat, lat + dlat, lon - dlon, lon + dlon


def place(j: Jurisdiction, facts: ReportFacts) -> Placement:
    """Find the report's grid: the code's grid, else point-in-polygon, else none."""
    if facts.grid_id and facts.grid_id in j.grids:
        grid = j.grids[facts.grid_id]
        where = f"“{facts.place_name}”" if facts.place_name else "报告码所在地点"
        where_en = f"'{facts.place_name}'" if facts.place_name else "the report code's place"
        return Placement(
            grid.id,
            grid.street_id,
            Reason(f"{where}属于{grid.name_zh}", f"{where_en} is in {grid.name_en}"),
        )
    if facts.lat is None or facts.lon is None:
        return Placement(None, None, Reason("既无报告码也无位置", "no report code and no location"))
    found = j.grid_at(facts.lat, facts.lon)
    point = f"({facts.lat:.5f}, {facts.lon:.5f})"
    if found is None:
        return Placement(
            None,
            None,
            Reason(f"位置{point}不在任何网格内", f"the point {point} lies outside every grid"),
        )
    return Placement(
        found.id,
        found.street_id,
        Reason(f"位置{point}位于{found.name_zh}", f"the point {point} lies in {found.name_en}"),
    )


def triage_centre(j: Jurisdiction, facts: ReportFacts, where: Placement) -> Station:
    """The centre that triages: the report's street, else the street nearest its point, else the first."""
    if where.street_id is not None:
        return j.centre_for(where.street_id)
    if facts.lat is not None and facts.lon is not None:
        street, _ = j.nearest_street(facts.lat, facts.lon)
        return j.centre_for(street.id)
    return j.centre_for(None)


def choose_station(
    j: Jurisdiction, category_id: str, grid_id: str
) -> tuple[Station, RoutingRule | None, Reason]:
    """The grid's station, or the one a routing rule names, with the reason."""
    station, rule = j.station_for(category_id, grid_id)
    if rule is not None:
        return (
            station,
            rule,
            Reason(
                f"按规则{rule.id}交{station.name_zh}：{rule.reason_zh}",
                f"rule {rule.id} sends it to {station.name_en}: {rule.reason_en}",
            ),
        )
    return station, None, Reason(f"由{station.name_zh}处置", f"handled by {station.name_en}")


def separation_m(category: Category, facts: ReportFacts, cand: Candidate) -> float | None:
    """Metres between a report and a case's anchor (0 at the same place), None when unknowable."""
    if facts.place_id is not None and cand.place_id == facts.place_id:
        return 0.0
    if facts.lat is None or facts.lon is None or cand.lat is None or cand.lon is None:
        return None
    return distance_m(facts.lat, facts.lon, cand.lat, cand.lon)


def find_duplicate(
    category: Category, facts: ReportFacts, candidates: Iterable[Candidate]
) -> tuple[Candidate, float] | None:
    """The nearest open case of the same category within radius and window (ties: the lower id)."""
    window = timedelta(hours=category.dup_window_hours)
    best: tuple[Candidate, float] | None = None
    for cand in candidates:
        if not cand.open or cand.category != category.id:
            continue
        # a report may arrive after a later one (another partition): only the gap counts
        if abs(facts.submitted_at - cand.last_report_at) > window:
            continue
        dist = separation_m(category, facts, cand)
        if dist is None or dist > category.dup_radius_m:
            continue
        if best is None or (dist, cand.case_id) < (best[1], best[0].case_id):
            best = (cand, dist)
    return best


def honoured_plus_one(
    category: Category, facts: ReportFacts, candidates: Iterable[Candidate]
) -> tuple[tuple[Candidate, float] | None, Reason | None]:
    """The rider's "+1" case when it may take the report, else why not (routed as if no "+1").

    Case ids are public (the rider page's open cases, the router's explain), so a "+1" is honoured
    only for an open case of the report's category whose anchor is within the category's duplicate
    radius of the report's place or point; a "+1" cannot pull a report into any case anywhere."""
    wanted = facts.plus_one_case_id
    chosen = next((c for c in candidates if c.case_id == wanted), None)
    if chosen is None or not chosen.open:
        return None, Reason(
            f"骑手点选的案件{wanted}已不在办理中，按常规判断",
            f"the rider's +1 case {wanted} is no longer open: routed as usual",
        )
    if chosen.category != category.id:
        return None, Reason(
            f"骑手点选的案件{wanted}不是同类问题，按常规判断",
            f"the rider's +1 case {wanted} is of another category: routed as usual",
        )
    dist = separation_m(category, facts, chosen)
    if dist is None or dist > category.dup_radius_m:
        return None, Reason(
            f"骑手点选的案件{wanted}不在合并半径{category.dup_radius_m:.0f}米内，按常规判断",
            f"the rider's +1 case {wanted} is not within {category.dup_radius_m:.0f} m: routed as usual",
        )
    return (chosen, dist), None


def decide(j: Jurisdiction, facts: ReportFacts, candidates: Sequence[Candidate]) -> RouteResult:
    """Route one report: triage, merge into a nearby open case, or open a new case."""
    where = place(j, facts)
    reasons = [where.reason]
    category = j.categories.get(facts.category)
    if category is None or where.grid_id is None:
        centre = triage_centre(j, facts, where)
        if category is None:
            reasons.append(Reason(f"未知类别“{facts.category}”", f"unknown category {facts.category!r}"))
        reasons.append(Reason(f"转{centre.name_zh}人工分拨", f"sent to {centre.name_en} for triage"))
        return RouteResult("triage", centre.id, where.grid_id, where.street_id, None, None, None, reasons)
    station, rule, why = choose_station(j, category.id, where.grid_id)
    reasons.append(why)
    rule_id = rule.id if rule else None
    dup = None
    plus_one = False
    if facts.plus_one_case_id:
        dup, refused = honoured_plus_one(category, facts, candidates)
        plus_one = dup is not None
        if refused is not None:
            reasons.append(refused)
    dup = dup or find_duplicate(category, facts, candidates)
    if dup is not None:
        cand, dist = dup
        if plus_one:
            reasons.append(
                Reason(f"骑手选择“+1”并入案件{cand.case_id}", f"the rider chose +1 on case {cand.case_id}")
            )
        elif facts.place_id is not None and cand.place_id == facts.place_id:
            reasons.append(
                Reason(
                    f"同一地点已有同类在办案件{cand.case_id}，合并",
                    f"open case {cand.case_id} of the same category is at the same place: merged",
                )
            )
        else:
            reasons.append(
                Reason(
                    f"{dist:.0f}米外已有同类在办案件{cand.case_id}（合并半径{category.dup_radius_m:.0f}米），合并",
                    f"open case {cand.case_id} of the same category is {dist:.0f} m away "
                    f"(radius {category.dup_radius_m:.0f} m): merged",
                )
            )
        if cand.station_id != station.id:
            reasons.append(
                Reason(
                    f"案件由{_station_zh(j, cand.station_id)}办理",
                    f"the case is with {_station_en(j, cand.station_id)}",
                )
            )
        return RouteResult(
            "merge", cand.station_id, where.grid_id, where.street_id, rule_id, cand.case_id, dist, reasons
        )
    reasons.append(
        Reason(
            f"{category.dup_radius_m:.0f}米内没有同类在办案件，新立案",
            f"no open case of this category within {category.dup_radius_m:.0f} m: a new case",
        )
    )
    return RouteResult("open", station.id, where.grid_id, where.street_id, rule_id, None, None, reasons)


def _station_zh(j: Jurisdiction, station_id: str) -> str:
    station = j.stations.get(station_id)
    return station.name_zh if station else station_id


def _station_en(j: Jurisdiction, station_id: str) -> str:
    station = j.stations.get(station_id)
    return station.name_en if station else station_id


def is_common_issue(reports: Iterable[tuple[str | None, datetime]]) -> bool:
    """True when some 24 h window holds reports of three or more distinct riders."""
    known = sorted((at, rider) for rider, at in reports if rider)
    for i, (start, _) in enumerate(known):
        riders = {r for at, r in known[i:] if at - start <= COMMON_ISSUE_WINDOW}
        if len(riders) >= COMMON_ISSUE_RIDERS:
            return True
    return False


def is_recurring(
    category: Category, facts: ReportFacts, history: Iterable[Candidate], exclude_case: str | None
) -> Candidate | None:
    """An earlier case of the same category at the same place within 30 days (rejected ones aside)."""
    for cand in sorted(history, key=lambda c: c.case_id):
        if cand.case_id == exclude_case or cand.category != category.id or cand.status == CaseStatus.REJECTED:
            continue
        opened = cand.opened_at or cand.last_report_at
        if not timedelta(0) <= facts.submitted_at - opened <= RECURRING_WINDOW:
            continue
        dist = separation_m(category, facts, cand)
        if dist is not None and dist <= category.dup_radius_m:
            return cand
    return None


def priority_for(
    category: Category | None, danger_now: bool, common_issue: bool, recurring: bool
) -> Priority:
    """Category default; 'danger now' makes it urgent; common issue and recurrence one step each."""
    base: Priority = category.default_priority if category else "normal"
    if danger_now:
        base = "urgent"
    return raise_priority(base, int(common_issue) + int(recurring))


def assess(
    category: Category | None,
    facts: ReportFacts,
    riders: int,
    common: bool,
    recurring: Candidate | None,
) -> Assessment:
    """This report's priority and the reasons, from its case's distinct riders and common-issue flag
    once the report has joined it (the index counts them: ``index.standing``)."""
    priority = priority_for(category, facts.danger_now, common, recurring is not None)
    reasons: list[Reason] = []
    if facts.danger_now:
        reasons.append(Reason("骑手标记“现在有危险”，列为紧急", "the rider flagged danger now: urgent"))
    if common:
        reasons.append(
            Reason(
                f"{riders}位骑手反映同一问题，列为共性问题，优先级上调",
                f"{riders} distinct riders reported it: a common issue, priority raised",
            )
        )
    if recurring is not None:
        reasons.append(
            Reason(
                f"30天内同一地点已有同类案件{recurring.case_id}，属反复发生，优先级上调",
                f"case {recurring.case_id} of the same category at this place within 30 days: "
                "a recurring hazard, priority raised",
            )
        )
    return Assessment(riders, common, recurring is not None, priority, reasons)
