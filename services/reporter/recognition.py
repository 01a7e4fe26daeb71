"""Riders recognised: staff's thank-you kept from `cases.events` (once per case), what a rider's
own tracking page shows of it, and a rider's contributions on /my (reports, cases fixed, thanks).

A thank-you is the riders' own: the tracking page shows it only with the report's credential
(Reporter.owns), never on the public status API or feeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from gridloop.clock import as_utc
from gridloop.rawsql import Raw, insert_row, statement
from schemas.cases import CaseStatus
from schemas.events import CaseRidersThanked
from schemas.thanks import preset_text
from services.reporter.models import Report, RiderThanks

FIXED = (CaseStatus.CLOSED,)
"""The report states that count as a case fixed: closed (the rider confirmed, or the confirm window
passed without a "not fixed")."""

_SEEN = statement("SELECT 1 FROM rider_thanks WHERE case_id = :case")


def riders_thanked(raw: Raw, data: CaseRidersThanked, event_id: str) -> bool:
    """Keep a case's thank-you (the first one: a redelivery, or a second event, changes nothing);
    True when it was new."""
    if raw.first(_SEEN, {"case": data.case_id}) is not None:
        return False
    insert_row(
        raw,
        "rider_thanks",
        {
            "case_id": data.case_id,
            "preset": data.preset,
            "text": data.text,
            "at": data.at,
            "event_id": event_id,
        },
    )
    return True


def thanks_of(session: Session, case_id: str | None, lang: str) -> dict[str, Any] | None:
    """A case's thank-you as a rider reads it (the preset in their language, staff's words), or None."""
    row = session.get(RiderThanks, case_id) if case_id else None
    if row is None:
        return None
    return {
        "preset": row.preset,
        "message": preset_text(row.preset, lang),
        "text": row.text,
        "at": as_utc(row.at).isoformat(),
    }


@dataclass(frozen=True)
class Contributions:
    """What a rider gave: their reports, the cases among them fixed, the cases thanked for."""

    reports: int
    fixed: int
    thanks: int


def contributions(session: Session, rider_ref: str | None) -> Contributions:
    """A rider's contributions, counted from their reports (each case once)."""
    if rider_ref is None:
        return Contributions(0, 0, 0)
    mine = Report.rider_ref == rider_ref
    reports = session.exec(select(func.count()).select_from(Report).where(mine)).one()
    fixed = session.exec(
        select(func.count(func.distinct(Report.case_id))).where(mine, col(Report.status).in_(FIXED))
    ).one()
    thanks = session.exec(
        select(func.count(func.distinct(Report.case_id)))
        .join(RiderThanks, col(RiderThanks.case_id) == col(Report.case_id))
        .where(mine)
    ).one()
    return Contributions(int(reports), int(fixed), int(thanks))
