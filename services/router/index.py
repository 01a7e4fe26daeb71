"""The case index in the router's database: lookups for routing, and upkeep from `cases.events`.

There is no in-memory copy: every decision reads the index inside the consumer's transaction, so a
second replica, a restarted one, or one that just took over another's partitions decides from the
same rows. Two decisions that could meet (one could merge into the case the other opens or changes)
must not interleave (both could see no case and both open one: a doubled case), so they are
serialised; decisions in areas that cannot meet run side by side:

- SQLite: the consumer's write transaction is ``BEGIN IMMEDIATE``, which already holds the
  database's single write lock from its first statement (one decision at a time, as before).
- PostgreSQL: one transaction advisory lock per area (a grid, or ``none`` outside every grid),
  ``pg_advisory_xact_lock(ROUTING_LOCK_CLASS, areas.lock_key(area))``, taken before the first read and
  held to commit. The areas of a report are every grid whose cases it could merge with or whose rows
  it may change (``services.router.areas``: its code's grid, and every grid its duplicate radius
  touches, across borders). A batch takes the union of its reports' areas as it begins, in ascending
  key order: two replicas never wait on each other in a cycle, and nothing is locked later in the
  transaction. The two-int form keeps these keys apart from every single-key advisory lock. The wait
  is observed in ``gridloop_route_lock_wait_seconds`` (SQLite: nothing is observed; its wait is in
  ``BEGIN IMMEDIATE``, outside the router).

Every report is routed here, so the lookups are plain SQL on the driver (``gridloop.rawsql``), each
answered from an index, and none grows with the size of a case: the distinct riders of a case are
kept on its row, and the common-issue test reads only the reports within 24 hours of the new one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeAlias

from sqlmodel import Session

from gridloop import metrics
from gridloop.rawsql import Raw, Tx, after_commit, insert_row, read_ts, record_type, select_sql, statement
from schemas.cases import FINAL_STATUSES, CaseStatus
from schemas.events import CaseTransitioned
from services.router.areas import lock_key
from services.router.models import CASE_RIDER, OPEN_CASE
from services.router.routing import (
    COMMON_ISSUE_WINDOW,
    RECURRING_WINDOW,
    Candidate,
    ReportFacts,
    bounding_box,
    is_common_issue,
)

log = logging.getLogger(__name__)
ROUTING_LOCK_CLASS = 0x67_6C_72_74  # "glrt": the first key of every routing lock; the second is the area's

CaseRow: TypeAlias = Any
"""A row of `open_case` as ``record_type(OPEN_CASE)``: a named tuple of OpenCase's columns, built
and read by name (typed Any: its fields are the model's columns, described there only)."""
new_case_row = record_type(OPEN_CASE)  # a CaseRow built by keyword, every column named


def _where(where: str) -> str:
    """A WHERE clause for ``Raw.records(OPEN_CASE, …)``, its whole statement registered for the check."""
    statement(select_sql(OPEN_CASE, where))
    return where


_BY_ID = _where("WHERE case_id = :id")
_ROUTED = ("last_report_at", "common_issue", "distinct_riders")
"""What a merge changes on a case (under the routing locks of the case's area)."""
_FOLLOWED = ("station_id", "open", "status", "triage", "version", "late_reports")
"""What `cases.events` change on a case (without the routing locks). Each writer writes only its own
columns, so a merge never undoes a closure that committed after the merge read the case, nor the
reverse; the rest of the row is fixed when the router names the case."""


def _update(columns: tuple[str, ...]) -> str:
    """An UPDATE of these columns of one case, registered for the check."""
    return statement(
        f"UPDATE open_case SET {', '.join(f'{c} = :{c}' for c in columns)} WHERE case_id = :case_id"
    )


_ROUTED_UPDATE = _update(_ROUTED)
_FOLLOWED_UPDATE = _update(_FOLLOWED)
# PostgreSQL only (not registered: SQLite has no such function); the casts pick the two-int form
_LOCK = "SELECT pg_advisory_xact_lock(CAST(:cls AS integer), CAST(:key AS integer))"
_RIDER_SEEN = statement("SELECT 1 FROM case_rider WHERE case_id = :case AND rider_ref = :rider LIMIT 1")
_RIDERS_AROUND = statement(
    "SELECT rider_ref, at FROM case_rider WHERE case_id = :case AND at >= :lo AND at <= :hi "
    "AND rider_ref IS NOT NULL"
)
_REPORT_IDS = statement("SELECT report_id FROM case_rider WHERE case_id = :id")


def load_case(raw: Raw, case_id: str) -> CaseRow | None:
    """One case of the index, or None."""
    return raw.record(OPEN_CASE, _BY_ID, {"id": case_id})


def insert_case(raw: Raw, case: CaseRow) -> None:
    """Add a case the router just named."""
    insert_row(raw, OPEN_CASE, case._asdict())


def update_routed(raw: Raw, case: CaseRow) -> None:
    """Write back what a merge changes on a case: its last report, riders and common-issue flag."""
    values = {c: getattr(case, c) for c in _ROUTED}
    values["last_report_at"] = raw.ts(case.last_report_at)
    values["case_id"] = case.case_id
    raw.run(_ROUTED_UPDATE, values)


def update_followed(raw: Raw, case: CaseRow) -> None:
    """Write back what `cases.events` change on a case: its state, station, version, late reports."""
    values = {c: getattr(case, c) for c in _FOLLOWED}
    values["case_id"] = case.case_id
    raw.run(_FOLLOWED_UPDATE, values)


def lock_areas(session: Session | Tx, areas: Iterable[str]) -> None:
    """Hold the routing locks of these areas to the end of the transaction (PostgreSQL; SQLite is
    already serialised), taken in ascending key order, and observe the wait once committed.

    A batch takes all of its areas at once as it begins (`lock_batch`): locks taken one by one later
    could deadlock two replicas. Re-entrant; taken inside a savepoint, they go when it is rolled back."""
    raw = Raw(session)
    if raw.sqlite:
        return
    started = time.perf_counter()
    for key in sorted({lock_key(a) for a in areas}):
        raw.run(_LOCK, {"cls": ROUTING_LOCK_CLASS, "key": key})
    waited = time.perf_counter() - started
    after_commit(session, lambda: metrics.route_lock_wait.observe(waited))


def lock_batch(session: Session | Tx, areas: Iterable[str]) -> None:
    """The routing locks of a whole consumer batch, taken as its transaction begins (outside every
    savepoint), so the reports in it need not take them one by one."""
    lock_areas(session, areas)
    session.info[BATCH_LOCKED] = True


BATCH_LOCKED = "routing_lock"


def candidate(row: CaseRow) -> Candidate:
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


_NEAR_BOX = "(lat BETWEEN :lat0 AND :lat1 AND lon BETWEEN :lon0 AND :lon1)"
_NEARBY = {
    # (at a place, at a point): open cases with a report in the window, or opened within the
    # recurrence window; the same category; at the same place or inside the bounding box
    (place, point): _where(
        "WHERE triage = :no AND ((open = :yes AND last_report_at >= :since) "
        "OR (opened_at >= :recurring_since AND opened_at <= :until)) AND category = :category AND ("
        + " OR ".join(near for near, given in (("place_id = :place_id", place), (_NEAR_BOX, point)) if given)
        + ")"
    )
    for place, point in ((True, False), (False, True), (True, True))
}


@dataclass
class Nearby:
    """The cases near a report, from one query: those it may merge into, and the history that makes
    it a recurring hazard."""

    cases: dict[str, CaseRow]
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
    lat, lon = facts.lat, facts.lon
    at_place = facts.place_id is not None
    at_point = lat is not None and lon is not None
    cases: dict[str, CaseRow] = {}
    if at_place or at_point:  # neither: nothing can be near it
        params: dict[str, Any] = {
            "yes": True,
            "no": False,
            "since": raw.ts(since),
            "recurring_since": raw.ts(recurring_since),
            "until": raw.ts(facts.submitted_at),
            "category": facts.category,
        }
        if at_place:
            params["place_id"] = facts.place_id
        if lat is not None and lon is not None:
            params["lat0"], params["lat1"], params["lon0"], params["lon1"] = bounding_box(lat, lon, radius_m)
        cases = {c.case_id: c for c in raw.records(OPEN_CASE, _NEARBY[at_place, at_point], params)}
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


def standing(raw: Raw, case: CaseRow | None, rider_ref: str | None, at: datetime) -> Standing:
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
        raw, CASE_RIDER, {"report_id": report_id, "case_id": case_id, "rider_ref": rider_ref, "at": at}
    )


def apply_case_state(
    case: CaseRow, status: CaseStatus, station_id: str, version: int, centre_ids: Sequence[str]
) -> CaseRow | None:
    """The case's index row with the closer's view of it applied; None for a stale (older) event.

    Closed and rejected cases leave the merge index (the row stays, for recurrence). A transfer moves
    the case to its new station. A triage case that a supervisor sent to a station becomes an
    ordinary case that later reports can merge into.
    """
    if version <= case.version:
        return None
    final = status in FINAL_STATUSES
    triage = case.triage
    if triage and station_id not in centre_ids and not final:
        triage = case.lat is None or case.lon is None  # a case nobody can be near stays out
    return case._replace(
        version=version, status=status, station_id=station_id, triage=triage, open=not final and not triage
    )


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
    stored = load_case(raw, data.case_id)
    if stored is None:
        log.warning("case event %s for case %s the router never named", event_type, data.case_id)
        return
    case = apply_case_state(stored, data.status, data.station_id, data.version, centre_ids)
    if case is None:
        return  # an older event than one already applied
    if data.status in FINAL_STATUSES and data.report_ids:
        late = sorted(set(report_ids(raw, case.case_id)) - set(data.report_ids))
        if late:
            case = case._replace(late_reports=case.late_reports + len(late))
            after_commit(session, lambda: metrics.route_late_merges.inc(len(late)))
            log.warning(
                "case %s was %s before reports %s merged into it reached the closer",
                case.case_id,
                data.status,
                ", ".join(late),
            )
    update_followed(raw, case)
