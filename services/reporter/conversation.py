"""The rider's side of a case's conversation: replies (words or a photo) and 催办, sent on to the
closer on `reports.feedback` (key: case id) like the rider's feedback; and the public updates and
questions staff wrote, kept from `cases.events` for the tracking page.

Every write is one transaction: the row, the photo, the public timeline step and the outbox event
together, or nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import ConfigDict, Field
from sqlalchemy import func, update
from sqlmodel import Session, col, select

from gridloop.clock import as_utc
from gridloop.errors import ApiError
from gridloop.outbox import add_event
from gridloop.photos import CleanPhoto
from gridloop.rawsql import Raw, insert_row, statement
from gridloop.topics import REPORTS_FEEDBACK
from schemas.events import (
    MAX_PUBLIC_TEXT,
    CaseNudged,
    CaseQuestionAsked,
    CaseRiderReplied,
    CaseUpdatedPublic,
    make_event,
)
from services.reporter import nudges
from services.reporter.credentials import PlainIn
from services.reporter.models import PLUMBING, CaseMessage, Photo, Report, ReportEvent, RiderReply
from services.reporter.reports import new_photo_id

SERVICE = "reporter"
REPLIES_PER_DAY = 10
"""Replies one report may add in 24 hours (429 beyond): enough to answer, too few to flood a station."""


class ReplyIn(PlainIn):
    """A rider's reply: words, a photo (multipart), or both; optionally the question it answers."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    text: str = Field("", max_length=MAX_PUBLIC_TEXT, description="The rider's words (plain text).")
    question_id: int | None = Field(None, ge=1, description="The question answered (its id on the page).")


def _retry(seconds: int, code: str, message: str) -> ApiError:
    return ApiError(429, code, message, {"retry_after": seconds}, headers={"Retry-After": str(seconds)})


def _case_of(report: Report) -> str:
    if report.case_id is None:
        raise ApiError(409, "no_case", "The report is not a case yet; try again in a moment.")
    return report.case_id


def reply(
    session: Session, report_id: str, body: ReplyIn, photo: CleanPhoto | None, now: datetime
) -> dict[str, Any]:
    """Store a reply with its photo, its timeline step and its `case.rider_replied` event; the reply
    as the API shows it."""
    report = session.get(Report, report_id)
    if report is None:
        raise ApiError(404, "not_found", "No such report.")
    case_id = _case_of(report)
    if not body.text and photo is None:
        raise ApiError(422, "text_required", "Write something or add a photo.", {"field": "text"})
    since = now - timedelta(hours=24)
    recent = session.exec(
        select(func.count())
        .select_from(RiderReply)
        .where(RiderReply.report_id == report_id, col(RiderReply.at) > since)
    ).one()
    if int(recent) >= REPLIES_PER_DAY:
        first = session.exec(
            select(func.min(RiderReply.at)).where(
                RiderReply.report_id == report_id, col(RiderReply.at) > since
            )
        ).one()
        wait = nudges.wait_seconds(first, now) if first is not None else 1
        raise _retry(wait, "rate_limited", f"At most {REPLIES_PER_DAY} replies a day; try again later.")
    reply_id = new_photo_id()
    photo_ids: list[str] = []
    if photo is not None:
        photo_ids.append(new_photo_id())
        session.add(
            Photo(
                photo_id=photo_ids[0],
                report_id=report_id,
                position=100 + int(recent),  # after the report's own photos
                width=photo.width,
                height=photo.height,
                size=len(photo.data),
                data=photo.data,
                created_at=now,
                reply_id=reply_id,
            )
        )
    data = CaseRiderReplied(
        report_id=report_id,
        case_id=case_id,
        reply_id=reply_id,
        question_id=body.question_id,
        text=body.text,
        photo_ids=photo_ids,
        at=now,
    )
    event = make_event("case.rider_replied", data, source=SERVICE, subject=case_id, time=now)
    row = RiderReply(
        reply_id=reply_id,
        report_id=report_id,
        case_id=case_id,
        question_id=body.question_id,
        text=body.text,
        at=now,
        event_id=event.id,
    )
    session.add(row)
    session.add(ReportEvent(report_id=report_id, status=report.status, action="rider_reply", at=now))
    add_event(session, PLUMBING, REPORTS_FEEDBACK, case_id, event)
    return {
        "reply_id": reply_id,
        "report_id": report_id,
        "case_id": case_id,
        "question_id": body.question_id,
        "text": body.text,
        "photo_ids": photo_ids,
        "at": now.isoformat(),
    }


def nudge(session: Session, report_id: str, now: datetime) -> Report:
    """The rider's 催办: at most once per 24 hours per report (429 with Retry-After otherwise), only
    while the case is being worked (409); the `case.nudged` event goes to the closer."""
    report = session.get(Report, report_id)
    if report is None:
        raise ApiError(404, "not_found", "No such report.")
    case_id = _case_of(report)
    if report.status not in nudges.NUDGE_STATUSES:
        raise ApiError(
            409, "not_open", "催办 is for a case still being worked on.", {"status": report.status}
        )
    # one atomic claim of the window: two taps at once cannot both pass
    claimed = session.exec(
        update(Report)
        .where(col(Report.report_id) == report_id)
        .where(col(Report.nudged_at).is_(None) | (col(Report.nudged_at) <= nudges.cutoff(now)))
        .values(nudged_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        session.refresh(report)
        wait = nudges.wait_seconds(report.nudged_at, now)
        raise _retry(wait, "nudge_limited", "每份报告 24 小时内只能催办一次 — one nudge per report a day.")
    data = CaseNudged(report_id=report_id, case_id=case_id, at=now)
    event = make_event("case.nudged", data, source=SERVICE, subject=case_id, time=now)
    session.add(ReportEvent(report_id=report_id, status=report.status, action="nudge", at=now))
    add_event(session, PLUMBING, REPORTS_FEEDBACK, case_id, event)
    session.flush()
    session.refresh(report)
    return report


def nudge_json(report: Report, now: datetime) -> dict[str, Any]:
    """The answer to a nudge: when it was, and when the next one is allowed."""
    last = as_utc(report.nudged_at) if report.nudged_at else None
    following = nudges.next_nudge_at(last)
    return {
        "report_id": report.report_id,
        "case_id": report.case_id,
        "nudged_at": last.isoformat() if last else None,
        "next_nudge_at": following.isoformat() if following else None,
    }


# ---- from `cases.events` (inside the consumer's plain-SQL batch) ----------------------------------

_SEEN = statement("SELECT 1 FROM case_message WHERE case_id = :case AND message_id = :message")


def public_message(raw: Raw, data: CaseUpdatedPublic | CaseQuestionAsked, kind: str) -> None:
    """Keep a public update or a question for the case's tracking pages (once per message)."""
    if raw.first(_SEEN, {"case": data.case_id, "message": data.message_id}) is not None:
        return
    insert_row(
        raw,
        "case_message",
        {
            "case_id": data.case_id,
            "message_id": data.message_id,
            "kind": kind,
            "text": data.text,
            "at": data.at,
        },
    )


# ---- what the tracking page shows ---------------------------------------------------------------


def updates(session: Session, case_id: str | None) -> list[dict[str, Any]]:
    """The public updates and questions of a case, oldest first (public: staff published them)."""
    if case_id is None:
        return []
    rows = session.exec(
        select(CaseMessage)
        .where(CaseMessage.case_id == case_id)
        .order_by(col(CaseMessage.at), col(CaseMessage.id))
    )
    return [
        {"id": m.message_id, "kind": m.kind, "text": m.text, "at": as_utc(m.at).isoformat()} for m in rows
    ]


def replies(session: Session, report_id: str) -> list[dict[str, Any]]:
    """The rider's own replies with their photos, oldest first (only for the report's credential)."""
    rows = session.exec(
        select(RiderReply).where(RiderReply.report_id == report_id).order_by(col(RiderReply.at))
    ).all()
    photos: dict[str, list[str]] = {}
    for photo_id, reply_id in session.exec(
        select(Photo.photo_id, Photo.reply_id).where(
            Photo.report_id == report_id, col(Photo.reply_id).is_not(None)
        )
    ):
        photos.setdefault(str(reply_id), []).append(f"/api/v1/photos/{photo_id}")
    return [
        {
            "reply_id": r.reply_id,
            "question_id": r.question_id,
            "text": r.text,
            "at": as_utc(r.at).isoformat(),
            "photo_urls": photos.get(r.reply_id, []),
        }
        for r in rows
    ]
