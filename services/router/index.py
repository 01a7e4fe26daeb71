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
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, false, text
from sqlmodel import Session, col, or_, select

from gridloop.clock import as_utc
from services.router.models import CaseRider, OpenCase
from services.router.routing import RECURRING_WINDOW, Candidate, ReportFacts, bounding_box

ROUTING_LOCK_KEY = 0x67_6C_72_74  # "glrt": the router's one advisory lock
FINAL_STATES = frozenset({"closed", "rejected"})


def lock_for_routing(session: Session) -> None:
    """Serialise routing decisions across replicas (PostgreSQL; SQLite is already serialised)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        # re-entrant within a transaction, so taking it once per report is harmless
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ROUTING_LOCK_KEY})
    elif dialect != "sqlite":  # pragma: no cover - only the two engines are supported
        raise RuntimeError(f"routing needs SQLite or PostgreSQL, not {dialect}")


def candidate(row: OpenCase) -> Candidate:
    """A case row as the pure routing code sees it."""
    return Candidate(
        case_id=row.case_id,
        category=row.category,
        station_id=row.station_id,
        lat=row.lat,
        lon=row.lon,
        place_id=row.place_id,
        last_report_at=as_utc(row.last_report_at),
        opened_at=as_utc(row.opened_at),
        open=row.open,
        status=row.status,
    )


def _nearby(facts: ReportFacts, radius_m: float) -> list[ColumnElement[bool]]:
    """WHERE clauses: the same category, and at the same place or inside the bounding box."""
    near: list[ColumnElement[bool]] = []
    if facts.place_id is not None:
        near.append(col(OpenCase.place_id) == facts.place_id)
    if facts.lat is not None and facts.lon is not None:
        lat0, lat1, lon0, lon1 = bounding_box(facts.lat, facts.lon, radius_m)
        near.append(col(OpenCase.lat).between(lat0, lat1) & col(OpenCase.lon).between(lon0, lon1))
    return [col(OpenCase.category) == facts.category, or_(*near) if near else false()]


def merge_candidates(
    session: Session, facts: ReportFacts, radius_m: float, window: timedelta
) -> list[Candidate]:
    """Open, non-triage cases of the report's category near it with a report inside the window."""
    query = select(OpenCase).where(
        OpenCase.open == True,  # noqa: E712
        OpenCase.triage == False,  # noqa: E712
        col(OpenCase.last_report_at) >= facts.submitted_at - window,
        *_nearby(facts, radius_m),
    )
    found = [candidate(row) for row in session.exec(query)]
    if facts.plus_one_case_id and all(c.case_id != facts.plus_one_case_id for c in found):
        chosen = session.get(OpenCase, facts.plus_one_case_id)
        if chosen is not None and chosen.open and not chosen.triage:
            found.append(candidate(chosen))
    return found


def recurrence_history(session: Session, facts: ReportFacts, radius_m: float) -> list[Candidate]:
    """Cases of the report's category near it opened in the 30 days before it, whatever their state."""
    query = select(OpenCase).where(
        OpenCase.triage == False,  # noqa: E712
        col(OpenCase.opened_at) >= facts.submitted_at - RECURRING_WINDOW,
        col(OpenCase.opened_at) <= facts.submitted_at,
        *_nearby(facts, radius_m),
    )
    return [candidate(row) for row in session.exec(query)]


def case_reports(session: Session, case_id: str) -> list[tuple[str | None, datetime]]:
    """Every report on a case as (rider reference, submitted at)."""
    rows = session.exec(select(CaseRider.rider_ref, CaseRider.at).where(CaseRider.case_id == case_id))
    return [(rider, as_utc(at)) for rider, at in rows]


def report_ids(session: Session, case_id: str) -> list[str]:
    """The reports the router put on a case."""
    return list(session.exec(select(CaseRider.report_id).where(CaseRider.case_id == case_id)))


def apply_case_state(
    case: OpenCase, status: str, station_id: str, version: int, centre_ids: Sequence[str]
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
