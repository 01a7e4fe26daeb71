"""The closer service: cases from 立案 to 结案, staff accounts, the queue."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import and_, or_
from sqlmodel import col, select

from gridloop.clock import as_utc, utcnow
from gridloop.errors import ApiError
from gridloop.service import Runtime, create_app
from gridloop.settings import Settings, get_settings
from gridloop.topics import CASES_EVENTS, REPORTS_ROUTED
from schemas.events import CaseOpened
from schemas.reference import load_jurisdiction
from services.closer import sla
from services.closer.auth import Principal, issue_token, read_token
from services.closer.intake import CaseIntake
from services.closer.models import PLUMBING, Base, Case, CaseReport, TimelineEntry
from services.closer.staff import check_login

SERVICE = "closer"
OPEN_STATES = ("new", "acknowledged", "dispatched", "resolved", "returned")


def case_view(case: Case, now: datetime) -> dict[str, Any]:
    """A case as the queue and the detail API show it."""
    due = as_utc(case.due_at) if case.due_at else None
    return {
        "case_id": case.case_id,
        "station_id": case.station_id,
        "category": case.category,
        "status": case.status,
        "priority": case.priority,
        "triage": case.triage,
        "version": case.version,
        "place_name": case.place_name,
        "description": case.description,
        "lat": case.lat,
        "lon": case.lon,
        "grid_id": case.grid_id,
        "submitted_at": as_utc(case.submitted_at).isoformat(),
        "ack_due": as_utc(case.ack_due).isoformat() if case.ack_due else None,
        "resolve_due": as_utc(case.resolve_due).isoformat() if case.resolve_due else None,
        "due_at": due.isoformat() if due else None,
        "colour": sla.colour(as_utc(case.submitted_at), due, now),
        "distinct_riders": case.distinct_riders,
        "report_count": case.report_count,
        "common_issue": case.common_issue,
        "danger_now": case.danger_now,
        "route_reason": case.route_reason,
    }


def _encode_cursor(case: Case) -> str:
    raw = json.dumps([as_utc(case.due_at).isoformat() if case.due_at else None, case.case_id])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime | None, str]:
    try:
        due, case_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return (datetime.fromisoformat(due) if due else None), str(case_id)
    except Exception as exc:
        raise ApiError(400, "bad_cursor", "The cursor is not valid.") from exc


def principal(request: Request) -> Principal:
    """The caller, from the bearer token; 401 without a valid one."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "Sign in first.", headers={"WWW-Authenticate": "Bearer"})
    return read_token(token.strip(), request.app.state.secret)


Who = Annotated[Principal, Depends(principal)]


def build(settings: Settings | None = None) -> FastAPI:
    """Create the closer's app and its consumers."""
    settings = settings or get_settings()
    runtime = Runtime(SERVICE, Base.metadata, PLUMBING, settings)
    jurisdiction = load_jurisdiction(settings.jurisdiction_dir)
    intake = CaseIntake(jurisdiction)
    runtime.consumer(
        "closer",
        [REPORTS_ROUTED],
        {"report.routed": intake.on_routed},
        replays={"report.routed": intake.replay},
    )
    runtime.document_publication(CASES_EVENTS, CaseOpened, "Case lifecycle events, keyed by case id.")
    secret = settings.signing_key()
    app = create_app(runtime, "GridLoop closer", "Cases, staff, SLAs, the queue and consoles.")
    app.state.jurisdiction = jurisdiction

    app.state.secret = secret

    @app.post("/api/v1/auth/token", tags=["auth"])
    async def token(form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> dict[str, Any]:
        """Exchange a username and password for an expiring bearer token."""

        def work() -> tuple[Any, float]:
            with runtime.db.session(write=True) as session:
                staff, delay = check_login(session, form.username, form.password)
                if staff is None:
                    return None, delay
                return (staff.username, staff.role, staff.station_ids), 0.0

        found, delay = await asyncio.to_thread(work)
        if found is None:
            await asyncio.sleep(delay)
            raise ApiError(
                401, "bad_credentials", "Wrong username or password.", headers={"WWW-Authenticate": "Bearer"}
            )
        username, role, stations = found
        return {
            "access_token": issue_token(username, role, stations, secret, settings.token_ttl_seconds),
            "token_type": "bearer",
            "expires_in": settings.token_ttl_seconds,
            "role": role,
            "stations": stations,
        }

    @app.get("/api/v1/queue", tags=["cases"])
    async def queue(
        who: Who,
        station: str | None = Query(None, max_length=40),
        status: str | None = Query(None, max_length=20, description="A state, or 'open' (default)."),
        category: str | None = Query(None, max_length=40),
        sort: str = Query("due", pattern="^due$"),
        limit: int = Query(50, ge=1, le=200),
        cursor: str | None = Query(None, max_length=200),
    ) -> dict[str, Any]:
        """A station's cases, most urgent first (by due time), paginated by cursor."""
        if station is None:
            if who.role == "staff":
                if len(who.stations) != 1:
                    raise ApiError(422, "station_required", "Name the station.")
                station = who.stations[0]
        elif station not in jurisdiction.stations:
            raise ApiError(404, "not_found", "No such station.")
        if station is not None and not who.can_see_station(station):
            raise ApiError(404, "not_found", "No such station.")
        after = _decode_cursor(cursor) if cursor else None

        def work() -> dict[str, Any]:
            query = select(Case)
            if station is not None:
                query = query.where(Case.station_id == station)
            if status in (None, "open"):
                query = query.where(col(Case.status).in_(OPEN_STATES))
            elif status != "all":
                query = query.where(Case.status == status)
            if category:
                query = query.where(Case.category == category)
            if after is not None:
                due, cid = after
                if due is None:
                    query = query.where(col(Case.due_at).is_(None), col(Case.case_id) > cid)
                else:
                    query = query.where(
                        or_(
                            col(Case.due_at) > due,
                            and_(col(Case.due_at) == due, col(Case.case_id) > cid),
                            col(Case.due_at).is_(None),
                        )
                    )
            query = query.order_by(col(Case.due_at).is_(None), col(Case.due_at), col(Case.case_id)).limit(
                limit + 1
            )
            with runtime.db.session() as session:
                rows = list(session.exec(query))
            now = utcnow()
            more = len(rows) > limit
            rows = rows[:limit]
            return {
                "station": station,
                "items": [case_view(c, now) for c in rows],
                "next_cursor": _encode_cursor(rows[-1]) if more and rows else None,
            }

        return await asyncio.to_thread(work)

    def _load_case(case_id: str, who: Principal) -> Case:
        with runtime.db.session() as session:
            case = session.get(Case, case_id)
        # another station's case is 404, not 403: its existence is not the caller's business
        if case is None or not who.can_see_station(case.station_id):
            raise ApiError(404, "not_found", "No such case.")
        return case

    @app.get("/api/v1/cases/{case_id}", tags=["cases"])
    async def get_case(case_id: str, who: Who) -> dict[str, Any]:
        """One case with its reports' count and SLA colour."""
        case = await asyncio.to_thread(_load_case, case_id, who)
        view = case_view(case, utcnow())

        def reports() -> list[str]:
            with runtime.db.session() as session:
                return list(session.exec(select(CaseReport.report_id).where(CaseReport.case_id == case_id)))

        view["report_ids"] = await asyncio.to_thread(reports)
        return view

    @app.get("/api/v1/cases/{case_id}/timeline", tags=["cases"])
    async def timeline(case_id: str, who: Who) -> dict[str, Any]:
        """The case's history, oldest first."""
        await asyncio.to_thread(_load_case, case_id, who)

        def work() -> list[dict[str, Any]]:
            with runtime.db.session() as session:
                rows = session.exec(
                    select(TimelineEntry)
                    .where(TimelineEntry.case_id == case_id)
                    .order_by(col(TimelineEntry.id))
                )
                return [
                    {
                        "at": as_utc(r.at).isoformat(),
                        "action": r.action,
                        "status": r.status,
                        "actor": r.actor,
                        "note": r.note,
                    }
                    for r in rows
                ]

        return {"case_id": case_id, "timeline": await asyncio.to_thread(work)}

    return app
