"""The case index in the router's database: lookups for routing, and upkeep from `cases.events`.

There is no in-memory copy: every decision reads the index inside the consumer's transaction, so a
second replica, a restarted one, or one that just took over another's partitions decides from the
same rows. Two decisions must not interleave (both could see no case and both open one: a doubled
case), so routing transactions are serialised:

- SQLite: the consumer's write transaction is ``BEGIN IMMEDIATE``, which already holds the
  database's single write lock from its first statement.
- PostgreSQL: ``pg_advisory_xact_lock`` on one key, taken before the first read and held to commit.
  One key rather than one per category: a batch routes several categories, and locks taken in
  report order could deadlock two replicas. Routing is a few index lookups per report, so one
  lock costs little next to the batch's commit.

Every report is routed here, so the lookups are plain SQL on the driver (``gridloop.rawsql``), each
answered from an index, and none grows with the size of a case: the distinct riders of a case are
kept on its row, and the common-issue test reads only the reports within 24 hours of the new one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from gridloop import metrics
from gridloop.rawsql import Raw, Tx, after_commit, insert_row, read_ts
from schemas.events import CaseTransitioned
from services.router.routing import (
    COMMON_ISSUE_WINDOW,
    RECURRING_WINDOW,
    Candidate,
    ReportFacts,
    bounding_box,
    is_common_issue,
)

log = logging.getLogger(__name__)
ROUTING_LOCK_KEY = 0x67_6C_72_74  # "glrt": the router's one advisory lock
FINAL_STATES = frozenset({"closed", "rejected"})
_LOCK = "SELECT pg_advisory_xact_lock(:key)"  # PostgreSQL only
_RIDER_SEEN = "SELECT 1 FROM case_rider WHERE case_id = :case AND rider_ref = :rider LIMIT 1"
_RIDERS_AROUND = (
    "SELECT rider_ref, at FROM case_rider WHERE case_id = :case AND at >= :lo AND at <= :hi "
    "AND rider_ref IS NOT NULL"
)
_REPORT_IDS = "SELECT report_id FROM case_rider WHERE case_id = :id"


@dataclass
class IndexCase:
    """A row of `open_case` (services.router.models.OpenCase)."""

    case_id: str
    category: str
    station_id: str
    grid_id: str | None
    street_id: str | None
    place_id: str | None
    lat: float | None
    lon: float | None
    opened_at: datetime
    last_report_at: datetime
    open: bool = True
    status: str = "new"
    triage: bool = False
    common_issue: bool = False
    version: int = 0
    late_reports: int = 0
    distinct_riders: int = 0


_CASE_FIELDS = tuple(f.name for f in fields(IndexCase))
_CASE_SELECT = f"SELECT {', '.join(_CASE_FIELDS)} FROM open_case"
_CASE_UPDATE = (
    "UPDATE open_case SET station_id = :station_id, last_report_at = :last_report_at, open = :open, "
    "status = :status, triage = :triage, common_issue = :common_issue, version = :version, "
    "late_reports = :late_reports, distinct_riders = :distinct_riders WHERE case_id = :case_id"
)


def _case(row: Sequence[Any]) -> IndexCase:
    case = IndexCase(*row)
    case.opened_at = read_ts(case.opened_at)  # type: ignore[assignment]
    case.last_report_at = read_ts(case.last_report_at)  # type: ignore[assignment]
    case.open, case.triage, case.common_issue = bool(case.open), bool(case.triage), bool(case.common_issue)
    return case


def load_case(raw: Raw, case_id: str) -> IndexCase | None:
    """One case of the index, or None."""
    row = raw.first(_CASE_SELECT + " WHERE case_id = :id", {"id": case_id})
    return _case(row) if row else None


def insert_case(raw: Raw, case: IndexCase) -> None:
    """Add a case the router just named."""
    insert_row(raw, "open_case", {f: getattr(case, f) for f in _CASE_FIELDS})


def update_case(raw: Raw, case: IndexCase) -> None:
    """Write back what routing and `cases.events` change on a case."""
    values = {f: getattr(case, f) for f in _CASE_FIELDS}
    values["last_report_at"] = raw.ts(case.last_report_at)
    del values["opened_at"]
    for fixed in ("category", "grid_id", "street_id", "place_id", "lat", "lon"):
        del values[fixed]
    raw.run(_CASE_UPDATE, values)


def lock_for_routing(raw: Raw) -> None:
    """Serialise routing decisions across replicas (PostgreSQL; SQLite is already serialised).

    Re-entrant within a transaction, and held to its commit. Taken inside a savepoint, it goes when
    the savepoint is rolled back."""
    if not raw.sqlite:
        raw.run(_LOCK, {"key": ROUTING_LOCK_KEY})


def lock_batch(session: Session | Tx) -> None:
    """The routing lock for a whole consumer batch, taken as its transaction begins (outside every
    savepoint), so the reports in it need not take it one by one."""
    lock_for_routing(Raw(session))
    session.info[BATCH_LOCKED] = True


BATCH_LOCKED = "routing_lock"


def candidate(row: IndexCase) -> Candidate:
    """A case row as the pure routing code sees it."""
    return Candidate(
        case_id=row.case_id,
        category=row.category,
        station_id=row.station_id,
        lat=row.lat,
        lon=row.lon,
        place_id=row.place_id,
        last_report_at=row.last_report_at,
        opened_at=row.opened_at,
        open=row.open,
        status=row.status,
    )


def _nearby(facts: ReportFacts, radius_m: float, params: dict[str, Any]) -> str:
    """WHERE clauses: the same category, and at the same place or inside the bounding box."""
    near: list[str] = []
    params["category"] = facts.category
    if facts.place_id is not None:
        near.append("place_id = :place_id")
        params["place_id"] = facts.place_id
    if facts.lat is not None and facts.lon is not None:
        params["lat0"], params["lat1"], params["lon0"], params["lon1"] = bounding_box(
            facts.lat, facts.lon, radius_m
        )
        near.append("(lat BETWEEN :lat0 AND :lat1 AND lon BETWEEN :lon0 AND :lon1)")
    return f"category = :category AND ({' OR '.join(near) if near else '1 = 0'})"


@dataclass
class Nearby:
    """The cases near a report, from one query: those it may merge into, and the history that makes
    it a recurring hazard."""

    cases: dict[str, IndexCase]
    """Every case found, by id."""
    candidates: list[Candidate]
    """Open, non-triage cases of its category near it with a report inside the window (or its +1)."""
    history: list[Candidate]
    """Non-triage cases of its category near it opened in the 30 days before it, whatever their state."""


def nearby(raw: Raw, facts: ReportFacts, radius_m: float, window: timedelta) -> Nearby:
    """The merge candidates and the recurrence history of a report (one indexed query, and one more
    for a '+1' on a case farther away)."""
    since = facts.submitted_at - window
    recurring_since = facts.submitted_at - RECURRING_WINDOW
    params: dict[str, Any] = {
        "yes": True,
        "no": False,
        "since": raw.ts(since),
        "recurring_since": raw.ts(recurring_since),
        "until": raw.ts(facts.submitted_at),
    }
    rows = raw.all(
        f"{_CASE_SELECT} WHERE triage = :no AND ((open = :yes AND last_report_at >= :since) "
        "OR (opened_at >= :recurring_since AND opened_at <= :until)) AND " + _nearby(facts, radius_m, params),
        params,
    )
    cases = {case.case_id: case for case in map(_case, rows)}
    candidates = [candidate(c) for c in cases.values() if c.open and c.last_report_at >= since]
    history = [candidate(c) for c in cases.values() if recurring_since <= c.opened_at <= facts.submitted_at]
    if facts.plus_one_case_id and facts.plus_one_case_id not in cases:
        chosen = load_case(raw, facts.plus_one_case_id)
        if chosen is not None and chosen.open and not chosen.triage:
            cases[chosen.case_id] = chosen
            candidates.append(candidate(chosen))
    return Nearby(cases, candidates, history)


@dataclass(frozen=True)
class Standing:
    """A case's riders once a report joined it: distinct riders, common issue, and whether the
    report's rider is new to the case."""

    distinct_riders: int
    common_issue: bool
    new_rider: bool


def standing(raw: Raw, case: IndexCase | None, rider_ref: str | None, at: datetime) -> Standing:
    """The standing of a case (None: one about to be opened) with one more report, not yet stored,
    by `rider_ref` at `at`.

    Distinct riders: the count kept on the case, plus one for a rider new to it. Common issue: it is
    sticky, and before this report no 24 h window held three riders, so only windows holding `at`
    can have changed; they lie within 24 h either side of it (reports arrive out of order).
    """
    stored = case is not None
    distinct = case.distinct_riders if case is not None else 0
    new_rider = False
    if rider_ref is not None:
        new_rider = not stored or (
            raw.first(_RIDER_SEEN, {"case": case.case_id, "rider": rider_ref})  # type: ignore[union-attr]
            is None
        )
        distinct += int(new_rider)
    common = case is not None and case.common_issue
    if not common and rider_ref is not None and stored and distinct >= 3:
        assert case is not None
        rows = raw.all(
            _RIDERS_AROUND,
            {
                "case": case.case_id,
                "lo": raw.ts(at - COMMON_ISSUE_WINDOW),
                "hi": raw.ts(at + COMMON_ISSUE_WINDOW),
            },
        )
        nearby = [(rider, read_ts(when)) for rider, when in rows]
        common = is_common_issue([*nearby, (rider_ref, at)])  # type: ignore[list-item]
    return Standing(max(distinct, 1), common, new_rider)


def report_ids(raw: Raw, case_id: str) -> list[str]:
    """The reports the router put on a case."""
    return [r[0] for r in raw.all(_REPORT_IDS, {"id": case_id})]


def add_report(raw: Raw, report_id: str, case_id: str, rider_ref: str | None, at: datetime) -> None:
    """Put a report on a case."""
    insert_row(
        raw, "case_rider", {"report_id": report_id, "case_id": case_id, "rider_ref": rider_ref, "at": at}
    )


def apply_case_state(
    case: IndexCase, status: str, station_id: str, version: int, centre_ids: Sequence[str]
) -> bool:
    """Apply the closer's view of a case to its index row; False for a stale (older) event.

    Closed and rejected cases leave the merge index (the row stays, for recurrence). A transfer moves
    the case to its new station. A triage case that a supervisor sent to a station becomes an
    ordinary case that later reports can merge into.
    """
    if version <= case.version:
        return False
    case.version = version
    case.status = status
    case.station_id = station_id
    if case.triage and station_id not in centre_ids and status not in FINAL_STATES:
        case.triage = case.lat is None or case.lon is None  # a case nobody can be near stays out
    case.open = status not in FINAL_STATES and not case.triage
    return True


def follow_case(session: Tx, data: CaseTransitioned, event_type: str, centre_ids: Sequence[str]) -> None:
    """Keep the index current from `cases.events`: closed and rejected cases leave it, transfers move it.

    The close/merge race: the router hears of a closure only when `case.closed` (or `case.rejected`)
    reaches it, and a report routed in between merges into a case the closer has just closed. The
    decision stands: a report gets exactly one answer, and re-routing it would give it two (the
    rider's receipt would point at one case; the closer and the reporter dedupe by report id and
    would keep the other). The closer, which owns case state, receives it as a report on a closed
    case. The late merges are spotted here, when the closure arrives (its ``report_ids`` lack a report
    the router merged): counted in ``gridloop_route_late_merges_total``, kept on the case row and
    logged, so operators see how often the window bites. From then on the case is out of the index
    and the next report there opens a new case.
    """
    raw = Raw(session)
    case = load_case(raw, data.case_id)
    if case is None:
        log.warning("case event %s for case %s the router never named", event_type, data.case_id)
        return
    if not apply_case_state(case, data.status, data.station_id, data.version, centre_ids):
        return  # an older event than one already applied
    if data.status in FINAL_STATES and data.report_ids:
        late = sorted(set(report_ids(raw, case.case_id)) - set(data.report_ids))
        if late:
            case.late_reports += len(late)
            after_commit(session, lambda: metrics.route_late_merges.inc(len(late)))
            log.warning(
                "case %s was %s before reports %s merged into it reached the closer",
                case.case_id,
                data.status,
                ", ".join(late),
            )
    update_case(raw, case)
