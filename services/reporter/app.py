"""The reporter service: places and codes, report intake, the riders' pages and view of their cases."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from typing import Any

from fastapi import Body, FastAPI, Query, Request, Response
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import ValidationError
from sqlmodel import Session, col, select
from starlette.datastructures import UploadFile

from gridloop import metrics
from gridloop.clock import as_utc, utcnow
from gridloop.errors import ApiError
from gridloop.groupcommit import GroupCommit
from gridloop.outbox import add_event
from gridloop.service import Runtime, create_app
from gridloop.settings import Settings, get_settings
from gridloop.topics import CASES_EVENTS, REPORTS_FEEDBACK, REPORTS_SUBMITTED
from schemas.events import ReportFeedback, ReportSubmitted
from schemas.reference import load_jurisdiction
from services.reporter import open311, pages, places, qr
from services.reporter.deps import RIDER_COOKIE, Deps, set_rider_cookie
from services.reporter.fastpath import JsonReportFastPath
from services.reporter.feedback import FeedbackIn, feedback_json, give_feedback, shown_feedback
from services.reporter.intake import ReportAccepted, ReportIn, submitted_event
from services.reporter.models import PLUMBING, ApiKey, Base, CaseView, Photo, Place, Report, ReportEvent
from services.reporter.photos import (
    MAX_PHOTO_BYTES,
    MAX_PHOTOS,
    MAX_REQUEST_BYTES,
    CleanPhoto,
    PhotoError,
    clean_photo,
)
from services.reporter.ratelimit import RateLimits
from services.reporter.readmodel import handlers as case_handlers
from services.reporter.wording import action_text, status_text

SERVICE = "reporter"
MAX_JSON_BYTES = 64 * 1024
log = logging.getLogger(__name__)


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
        photo_ids = session.exec(
            select(Photo.photo_id).where(Photo.report_id == report.report_id).order_by(col(Photo.position))
        ).all()
        event = submitted_event(
            report, place.name_zh if place else None, report.submitted_at, list(photo_ids)
        )
        add_event(session, PLUMBING, REPORTS_SUBMITTED, report.grid_id or "none", event)
        report.last_published_at = utcnow()
        session.add(report)
    return len(rows)


def public_report(
    report: Report, events: list[ReportEvent], view: CaseView | None, base_url: str, closer_url: str
) -> dict[str, Any]:
    """The public view of a report: status and timeline, no personal data."""
    after = view.after_photo_ids.split(",") if view and view.after_photo_ids else []
    return {
        "report_id": report.report_id,
        "case_id": report.case_id,
        "status": report.status,
        "status_text": status_text(report.status, "zh"),
        "category": report.category,
        "place_id": report.place_id,
        "submitted_at": as_utc(report.submitted_at).isoformat(),
        "tracking_url": f"{base_url.rstrip('/')}/t/{report.report_id}",
        "station_id": view.station_id if view else None,
        "resolve_due": as_utc(view.resolve_due).isoformat() if view and view.resolve_due else None,
        "after_photo_urls": [f"{closer_url.rstrip('/')}/photos/{p}.jpg" for p in after],
        "timeline": [
            {
                "status": e.status,
                "action": e.action,
                "text": action_text(e.action, "zh"),
                "at": as_utc(e.at).isoformat(),
                "note": e.note,
            }
            for e in events
        ],
    }


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "on", "yes")


def _reject(reason: str, status: int, code: str, message: str, details: Any = None) -> ApiError:
    metrics.reports_rejected.labels(reason).inc()
    return ApiError(status, code, message, details)


def too_large(cap: int) -> ApiError:
    """The 413 of a request body over `cap` bytes."""
    return _reject(
        "too_large", 413, "payload_too_large", f"The request is larger than {cap // 1048576 or 1} MB."
    )


async def _capped_body(request: Request, cap: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `cap` bytes (before it is all read)."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > cap:
        raise too_large(cap)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise too_large(cap)
    return bytes(body)


def report_from_json(raw: bytes) -> ReportIn:
    """A report from a JSON body: 400 when it is not JSON, 422 when it is not a valid report."""
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise _reject("invalid", 400, "invalid_json", "The body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise _reject("invalid", 422, "invalid", "The body must be a JSON object.")
    return _validated(data)


def check_idempotency_key(key: str | None) -> None:
    """422 for an Idempotency-Key header of the wrong length."""
    if key is not None and not 1 <= len(key) <= 100:
        raise _reject("invalid", 422, "invalid", "Idempotency-Key has 1 to 100 characters.")


def _validated(fields: dict[str, Any]) -> ReportIn:
    try:
        return ReportIn.model_validate(fields)
    except ValidationError as exc:
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise _reject("invalid", 422, "invalid", "The report is not valid.", details) from exc


async def read_report_request(request: Request) -> tuple[ReportIn, list[CleanPhoto]]:
    """A report from a JSON body, or from a multipart form with up to 3 photos (checked and cleaned)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        return report_from_json(await _capped_body(request, MAX_JSON_BYTES)), []
    if ctype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise _reject(
            "invalid", 415, "unsupported_media_type", "Send JSON, or a multipart form (with photos)."
        )
    request._body = await _capped_body(request, MAX_REQUEST_BYTES)  # form() reads the capped copy
    form = await request.form(max_files=MAX_PHOTOS + 7, max_fields=40)
    uploads = [v for k in ("photos", "photo") for v in form.getlist(k) if isinstance(v, UploadFile)]
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if isinstance(value, str) and key not in ("photos", "photo", "lat", "lon") and value != "":
            fields[key] = value
    if "danger_now" in fields:
        fields["danger_now"] = _flag(fields["danger_now"])
    lat, lon = form.get("lat"), form.get("lon")
    if isinstance(lat, str) and isinstance(lon, str) and lat and lon:
        fields["location"] = {"lat": lat, "lon": lon}
    body = _validated(fields)
    if len(uploads) > MAX_PHOTOS:
        raise _reject("too_many_photos", 422, "too_many_photos", f"At most {MAX_PHOTOS} photos.")
    raws = []
    for index, upload in enumerate(uploads):
        raw = await upload.read(MAX_PHOTO_BYTES + 1)
        if len(raw) > MAX_PHOTO_BYTES:
            raise _reject(
                "photo_too_large", 413, "photo_too_large", f"Photo {index + 1} is larger than 10 MB."
            )
        raws.append(raw)

    def clean() -> list[CleanPhoto]:
        return [clean_photo(raw, f"photo {i + 1}") for i, raw in enumerate(raws)]

    try:
        photos = await asyncio.to_thread(clean)
    except PhotoError as exc:
        reason = "photo_too_large" if exc.status == 413 else "not_an_image"
        raise _reject(reason, exc.status, exc.code, exc.message) from exc
    return body, photos


def build(settings: Settings | None = None) -> FastAPI:
    """Create the reporter's app and its consumers."""
    settings = settings or get_settings()
    runtime = Runtime(SERVICE, Base.metadata, PLUMBING, settings)
    jurisdiction = load_jurisdiction(settings.jurisdiction_dir)
    deps = Deps(
        runtime, settings, jurisdiction, settings.signing_key(), RateLimits(), GroupCommit(runtime.db)
    )
    runtime.consumer("reporter", [CASES_EVENTS], case_handlers(), plain_sql=True)
    runtime.document_publication(REPORTS_SUBMITTED, ReportSubmitted, "Accepted reports, keyed by grid id.")
    runtime.document_publication(REPORTS_FEEDBACK, ReportFeedback, "Riders' answers, keyed by case id.")

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
    app.add_middleware(GZipMiddleware, minimum_size=800)
    # added last, so outermost: the riders' JSON posts skip the layers above (services.reporter.fastpath)
    app.add_middleware(
        JsonReportFastPath,
        service=SERVICE,
        submit=deps.submit,
        read_json=report_from_json,
        check_key=check_idempotency_key,
        too_large=lambda: too_large(MAX_JSON_BYTES),
        max_bytes=MAX_JSON_BYTES,
        context=deps.intake_context,
    )
    app.state.jurisdiction = jurisdiction
    app.state.deps = deps

    @app.post(
        "/api/v1/reports",
        status_code=202,
        response_model=ReportAccepted,
        tags=["reports"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "JSON (ReportIn), or multipart/form-data with the same fields (location as "
                "lat and lon) and up to 3 files named `photos` (JPEG/PNG/WebP, at most 10 MB each).",
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "multipart/form-data": {"schema": {"type": "object"}},
                },
            }
        },
    )
    async def post_report(request: Request, response: Response) -> Any:
        """Accept a rider's report: stored before this answer, routed in the background."""
        key = request.headers.get("Idempotency-Key")
        check_idempotency_key(key)
        body, photos = await read_report_request(request)
        ctx, new_token = deps.intake_context(
            request.cookies.get(RIDER_COOKIE), request.client.host if request.client else None
        )
        ctx.photos = photos
        if new_token is not None:
            set_rider_cookie(response, new_token)
        return await deps.submit(body, ctx, key)

    @app.get("/api/v1/reports/{report_id}", tags=["reports"])
    async def get_report(report_id: str) -> JSONResponse:
        """Public status and timeline of a report."""

        def work(session: Session) -> dict[str, Any] | None:
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
            view = session.get(CaseView, report.case_id) if report.case_id else None
            out = public_report(report, events, view, settings.public_base_url, settings.closer_public_url)
            feedback = shown_feedback(session, report)
            out["feedback"] = feedback_json(feedback) if feedback else None
            return out

        view = await deps.read(work)
        if view is None:
            raise ApiError(404, "not_found", "No such report.")
        return JSONResponse(view)

    @app.post("/api/v1/reports/{report_id}/feedback", tags=["reports"])
    async def post_feedback(
        report_id: str, response: Response, body: FeedbackIn = Body(...)
    ) -> dict[str, Any]:
        """The rider confirms the fix or says it is not fixed (a comment is required), with a 1–5 rating."""
        row, created = await deps.write(lambda s: give_feedback(s, report_id, body))
        response.status_code = 201 if created else 200
        return feedback_json(row)

    @app.get("/api/v1/photos/{photo_id}", tags=["reports"])
    async def get_photo(photo_id: str) -> Response:
        """A rider's photo (re-encoded JPEG, no metadata)."""
        photo = await deps.read(lambda s: s.get(Photo, photo_id))
        if photo is None:
            raise ApiError(404, "not_found", "No such photo.")
        return Response(
            photo.data,
            media_type=photo.content_type,
            headers={"Cache-Control": "public, max-age=31536000, immutable"},
        )

    # --- admin: places, codes, QR images, sheets, Open311 keys -------------------------------

    @app.post("/api/v1/places", status_code=201, tags=["admin"])
    async def create_place(request: Request, body: places.PlaceIn = Body(...)) -> dict[str, Any]:
        """Create a place (its grid and station from its coordinates) and, by default, a code for it."""
        deps.principal(request, "admin")

        def work(session: Session) -> dict[str, Any]:
            place, code = places.create_place(session, jurisdiction, body)
            return {
                **places.place_json(place),
                "code": places.code_json(code, deps.base_url) if code else None,
            }

        return await deps.write(work)

    @app.get("/api/v1/places", tags=["admin"])
    async def list_places(request: Request, station_id: str | None = Query(None)) -> dict[str, Any]:
        """Places, optionally of one station."""
        deps.principal(request, "admin", "supervisor")

        def work(session: Session) -> list[dict[str, Any]]:
            query = select(Place).order_by(col(Place.place_id))
            if station_id:
                query = query.where(Place.station_id == station_id)
            return [places.place_json(p) for p in session.exec(query)]

        return {"items": await deps.read(work)}

    @app.post("/api/v1/codes", status_code=201, tags=["admin"])
    async def issue_code(request: Request, body: places.CodeIn = Body(...)) -> dict[str, Any]:
        """Issue a new report code for a place."""
        deps.principal(request, "admin")
        return await deps.write(
            lambda s: places.code_json(places.issue_code(s, body.place_id), deps.base_url)
        )

    @app.get("/api/v1/codes", tags=["admin"])
    async def list_codes(
        request: Request,
        station_id: str | None = Query(None),
        place_id: str | None = Query(None),
        include_inactive: bool = Query(False),
    ) -> dict[str, Any]:
        """Codes with their places."""
        deps.principal(request, "admin", "supervisor")

        def work(session: Session) -> list[dict[str, Any]]:
            rows = places.list_codes(session, station_id, place_id, include_inactive)
            return [
                {**places.code_json(r.code, deps.base_url), "place": places.place_json(r.place)} for r in rows
            ]

        return {"items": await deps.read(work)}

    @app.post("/api/v1/codes/{code}/deactivate", tags=["admin"])
    async def deactivate_code(
        request: Request, code: str, body: places.CodeChange | None = None
    ) -> dict[str, Any]:
        """Take a code out of use; scanning it shows a clear 'deactivated' page."""
        deps.principal(request, "admin")
        note = body.note if body else None
        return await deps.write(
            lambda s: places.code_json(places.deactivate_code(s, code, note), deps.base_url)
        )

    @app.post("/api/v1/codes/{code}/replace", status_code=201, tags=["admin"])
    async def replace_code(
        request: Request, code: str, body: places.CodeChange | None = None
    ) -> dict[str, Any]:
        """Replace a damaged code: the old one points riders to the new one."""
        deps.principal(request, "admin")
        note = body.note if body else None

        def work(session: Session) -> dict[str, Any]:
            old, new = places.replace_code(session, code, note)
            return {"old": places.code_json(old, deps.base_url), "new": places.code_json(new, deps.base_url)}

        return await deps.write(work)

    @app.get("/api/v1/codes/{code}.{fmt}", tags=["admin"])
    async def code_image(code: str, fmt: str, scale: int = Query(8, ge=1, le=40)) -> Response:
        """The QR code of a report code as SVG or PNG, pointing at the rider page."""
        if fmt not in ("svg", "png"):
            raise ApiError(404, "not_found", "QR images are .svg or .png.")
        found = await deps.read(lambda s: pages.lookup_code(s, code))
        if found.code is None or found.place is None:
            raise ApiError(404, "unknown_code", "No place has this report code.")
        if fmt == "svg":
            return Response(qr.qr_svg(deps.base_url, found.code, scale), media_type="image/svg+xml")
        return Response(qr.qr_png(deps.base_url, found.code, scale), media_type="image/png")

    @app.get("/api/v1/stations/{station_id}/codes/sheet", response_class=HTMLResponse, tags=["admin"])
    async def code_sheet(request: Request, station_id: str) -> HTMLResponse:
        """The printable A4 sheet of a station's active codes (open it and print)."""
        who = deps.principal(request)
        if station_id not in jurisdiction.stations or not who.can_see_station(station_id):
            raise ApiError(404, "not_found", "No such station.")
        rows = await deps.read(lambda s: places.list_codes(s, station_id=station_id))
        return HTMLResponse(qr.render_sheet(rows, station_id, jurisdiction, deps.base_url))

    @app.post("/api/v1/open311/keys", status_code=201, tags=["admin"])
    async def issue_api_key(request: Request, body: dict[str, str] = Body(...)) -> dict[str, Any]:
        """Issue an Open311 API key (shown once; only its digest is kept)."""
        who = deps.principal(request, "admin")
        name = (body.get("name") or "").strip()
        if not name or len(name) > 100:
            raise ApiError(422, "invalid", "name: 1 to 100 characters.")
        key_id, secret = open311.new_api_key()

        def work(session: Session) -> None:
            session.add(
                ApiKey(
                    key_id=key_id,
                    key_hash=open311.key_digest(secret),
                    name=name,
                    created_by=who.username,
                    created_at=utcnow(),
                )
            )

        await deps.write(work)
        return {"key_id": key_id, "name": name, "api_key": secret}

    @app.get("/api/v1/open311/keys", tags=["admin"])
    async def list_api_keys(request: Request) -> dict[str, Any]:
        """The Open311 API keys (without the secrets)."""
        deps.principal(request, "admin")

        def work(session: Session) -> list[dict[str, Any]]:
            rows = session.exec(select(ApiKey).order_by(col(ApiKey.created_at)))
            return [
                {
                    "key_id": k.key_id,
                    "name": k.name,
                    "created_by": k.created_by,
                    "created_at": as_utc(k.created_at).isoformat(),
                    "revoked": k.revoked_at is not None,
                }
                for k in rows
            ]

        return {"items": await deps.read(work)}

    @app.delete("/api/v1/open311/keys/{key_id}", status_code=204, tags=["admin"])
    async def revoke_api_key(request: Request, key_id: str) -> Response:
        """Revoke an Open311 API key."""
        deps.principal(request, "admin")

        def work(session: Session) -> bool:
            row = session.get(ApiKey, key_id)
            if row is None:
                return False
            row.revoked_at = row.revoked_at or utcnow()
            session.add(row)
            return True

        if not await deps.write(work):
            raise ApiError(404, "not_found", "No such key.")
        return Response(status_code=204)

    pages.install(app, deps)
    open311.install(app, deps)
    return app
