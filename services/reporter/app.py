"""The reporter service: places and codes, report intake, the riders' view of their cases."""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import timedelta
from typing import Any

from fastapi import Body, FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from gridloop.clock import as_utc, utcnow
from gridloop.consumer import Incoming
from gridloop.errors import ApiError
from gridloop.outbox import add_event
from gridloop.service import Runtime, create_app
from gridloop.settings import Settings, get_settings
from gridloop.topics import CASES_EVENTS, REPORTS_SUBMITTED
from schemas.events import CaseOpened, CaseReportMerged, CaseTransitioned, ReportSubmitted
from schemas.reference import load_jurisdiction
from services.reporter.intake import (
    IntakeContext,
    ReportAccepted,
    ReportIn,
    accept_report,
    rider_ref_for,
    submitted_event,
)
from services.reporter.models import PLUMBING, Base, Place, Report, ReportEvent

SERVICE = "reporter"
RIDER_COOKIE = "gl_rider"
log = logging.getLogger(__name__)


def _set_status(
    session: Session, report: Report, status: str, action: str, at: Any, version: int, note: str | None = None
) -> None:
    if version and version < report.case_version:
        return  # an older event arriving late must not move the status back
    report.status = status
    report.status_at = at
    report.case_version = max(version, report.case_version)
    session.add(report)
    session.add(ReportEvent(report_id=report.report_id, status=status, action=action, at=at, note=note))


def on_case_opened(session: Session, item: Incoming) -> None:
    """A case was opened for one of our reports: the receipt now points at it."""
    data = item.data
    assert isinstance(data, CaseOpened)
    report = session.get(Report, data.report_id)
    if report is None:
        return
    report.case_id = data.case_id
    _set_status(session, report, data.status, "opened", data.opened_at, data.version)


def on_report_merged(session: Session, item: Incoming) -> None:
    """Our report joined an existing case."""
    data = item.data
    assert isinstance(data, CaseReportMerged)
    report = session.get(Report, data.report_id)
    if report is None:
        return
    report.case_id = data.case_id
    _set_status(session, report, data.status, "merged", item.event.time, data.version)


def on_case_transition(session: Session, item: Incoming) -> None:
    """A case moved on: every report in it shows the new status."""
    data = item.data
    assert isinstance(data, CaseTransitioned)
    reports = session.exec(select(Report).where(Report.case_id == data.case_id)).all()
    known = {r.report_id for r in reports}
    extra = [rid for rid in data.report_ids if rid not in known]
    if extra:
        reports = [*reports, *session.exec(select(Report).where(col(Report.report_id).in_(extra))).all()]
    for report in reports:
        report.case_id = data.case_id
        _set_status(session, report, data.status, data.action, data.at, data.version, None)


def redrive_unfinished(session: Session, older_than: timedelta, limit: int = 500) -> int:
    """Publish again the reports that have no case yet (the broker may have lost them); same event ids."""
    cutoff = utcnow() - older_than
    rows = session.exec(
        select(Report)
        .where(col(Report.case_id).is_(None), col(Report.last_published_at) < cutoff)
        .order_by(col(Report.submitted_at))
        .limit(limit)
    ).all()
    for report in rows:
        report.submitted_at = as_utc(report.submitted_at)
        place = session.get(Place, report.place_id) if report.place_id else None
        event = submitted_event(report, place.name_zh if place else None, report.submitted_at)
        add_event(session, PLUMBING, REPORTS_SUBMITTED, report.grid_id or "none", event)
        report.last_published_at = utcnow()
        session.add(report)
    return len(rows)


def public_report(report: Report, events: list[ReportEvent], base_url: str) -> dict[str, Any]:
    """The public view of a report: status and timeline, no personal data."""
    return {
        "report_id": report.report_id,
        "case_id": report.case_id,
        "status": report.status,
        "category": report.category,
        "place_id": report.place_id,
        "submitted_at": as_utc(report.submitted_at).isoformat(),
        "tracking_url": f"{base_url.rstrip('/')}/t/{report.report_id}",
        "timeline": [
            {"status": e.status, "action": e.action, "at": as_utc(e.at).isoformat()} for e in events
        ],
    }


def build(settings: Settings | None = None) -> FastAPI:
    """Create the reporter's app and its consumers."""
    settings = settings or get_settings()
    runtime = Runtime(SERVICE, Base.metadata, PLUMBING, settings)
    jurisdiction = load_jurisdiction(settings.jurisdiction_dir)
    secret = settings.signing_key()
    runtime.consumer(
        "reporter",
        [CASES_EVENTS],
        {
            "case.opened": on_case_opened,
            "case.report_merged": on_report_merged,
            **{
                f"case.{n}": on_case_transition
                for n in (
                    "acknowledged",
                    "dispatched",
                    "resolved",
                    "returned",
                    "transferred",
                    "on_hold",
                    "reopened",
                    "closed",
                    "rejected",
                    "escalated",
                    "extension_requested",
                    "extension_decided",
                )
            },
        },
    )
    runtime.document_publication(REPORTS_SUBMITTED, ReportSubmitted, "Accepted reports, keyed by grid id.")

    async def redrive_loop() -> None:
        every = max(settings.redrive_after_seconds / 4, 1.0)
        while True:
            await asyncio.sleep(every)
            try:

                def work() -> int:
                    with runtime.db.session(write=True) as session:
                        return redrive_unfinished(session, timedelta(seconds=settings.redrive_after_seconds))

                count = await asyncio.to_thread(work)
                if count:
                    log.info("re-driving %d reports without a case", count)
                    runtime.relay.wake()
            except Exception:
                log.exception("redrive failed")

    runtime.background.append(redrive_loop)
    app = create_app(runtime, "GridLoop reporter", "Report codes, rider intake, tracking, Open311.")
    app.state.jurisdiction = jurisdiction

    @app.post("/api/v1/reports", status_code=202, response_model=ReportAccepted, tags=["reports"])
    async def post_report(
        request: Request,
        response: Response,
        body: ReportIn = Body(...),
        idempotency_key: str | None = Header(None, alias="Idempotency-Key", max_length=100),
    ) -> Any:
        """Accept a rider's report: stored before this answer, routed in the background."""
        token = request.cookies.get(RIDER_COOKIE)
        if not token:
            token = secrets.token_urlsafe(18)
            response.set_cookie(RIDER_COOKIE, token, max_age=3600 * 24 * 365, httponly=True, samesite="lax")
        ctx = IntakeContext(channel="scan", rider_ref=rider_ref_for(token, secret))

        def work() -> tuple[ReportAccepted, bool]:
            for attempt in range(2):
                try:
                    with runtime.db.session(write=True) as session:
                        return accept_report(
                            session, body, ctx, jurisdiction, idempotency_key, settings.public_base_url
                        )
                except IntegrityError:
                    if attempt:  # a concurrent request with the same key won: answer as it did
                        raise
            raise AssertionError("unreachable")

        answer, _created = await asyncio.to_thread(work)
        runtime.relay.wake()
        return answer

    @app.get("/api/v1/reports/{report_id}", tags=["reports"])
    async def get_report(report_id: str) -> JSONResponse:
        """Public status and timeline of a report."""

        def work() -> dict[str, Any] | None:
            with runtime.db.session() as session:
                report = session.get(Report, report_id)
                if report is None:
                    return None
                events = list(
                    session.exec(
                        select(ReportEvent)
                        .where(ReportEvent.report_id == report_id)
                        .order_by(col(ReportEvent.id))
                    )
                )
                return public_report(report, events, settings.public_base_url)

        view = await asyncio.to_thread(work)
        if view is None:
            raise ApiError(404, "not_found", "No such report.")
        return JSONResponse(view)

    return app
