"""The riders' JSON API: post a report (JSON or a form with photos), its status, feedback, photos, this
phone's reports, the open cases at a place and where a point falls.

`POST /api/v1/reports` with a JSON body is answered in front of FastAPI by services.reporter.fastpath,
with the readers below; the route here serves forms with photos and documents the endpoint.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError
from sqlmodel import Session
from starlette.datastructures import UploadFile

from gridloop.clock import as_utc, utcnow
from gridloop.errors import ApiError, size_text, too_large_message
from gridloop.photos import (
    MAX_PHOTO_BYTES,
    MAX_PHOTOS,
    MAX_REQUEST_BYTES,
    CleanPhoto,
    PhotoError,
    clean_photo,
)
from schemas.cases import ClockMode
from services.reporter import recognition
from services.reporter.context import RIDER_COOKIE, Ctx, Lang, Reporter, RiderRef
from services.reporter.models import CaseView, Photo, Place, Report
from services.reporter.readmodel import open_cases
from services.reporter.refusals import Refusal, count_refusals
from services.reporter.reports import ReportAccepted, ReportIn
from services.reporter.rider_feedback import FeedbackIn, feedback_json, give_feedback
from services.reporter.riders import recognition_code
from services.reporter.tracking import load_public_report, my_report_rows
from services.reporter.wording import ago

router = APIRouter(tags=["reports"])
M = TypeVar("M", bound=BaseModel)


# --- answers -------------------------------------------------------------------------------------


class TimelineStep(BaseModel):
    """One step of a report's public timeline."""

    status: str
    action: str
    text: str
    at: str
    note: str | None


class FeedbackOut(BaseModel):
    """A rider's stored answer on a resolution."""

    report_id: str
    case_id: str
    fixed: bool
    rating: int | None
    comment: str
    at: str


class PublicUpdate(BaseModel):
    """A public update or a question staff wrote on the case."""

    id: int = Field(description="Its id; a reply to a question names it as question_id.")
    kind: str = Field(description="public (an update) or question.")
    text: str
    at: str


class OwnReply(BaseModel):
    """One of the rider's replies."""

    reply_id: str
    question_id: int | None
    text: str
    at: str
    photo_urls: list[str]


class PublicTopic(BaseModel):
    """The topic (议题) a report's case is in: what, who takes it up, the meeting's decision, the outcome."""

    topic_id: str
    title: str
    body: str = Field(description="Who takes it up (街区治理委员会, a department, a committee).")
    status: str = Field(description="open, or closed with its outcome.")
    held_on: str | None = Field(None, description="The meeting's date (ISO), once recorded.")
    decision: str | None = None
    follow_up_due: str | None = None
    outcome: str | None = None
    resolves: bool
    updated_at: str


class PublicReport(BaseModel):
    """The public status and timeline of a report (no personal data)."""

    report_id: str
    case_id: str | None
    status: str
    status_text: str
    category: str
    place_id: str | None
    submitted_at: str
    tracking_url: str
    station_id: str | None
    resolve_due: str | None
    clock: ClockMode | None = Field(
        None, description="The SLA clock: calendar is around the clock (24 小时处置); None before a case."
    )
    after_photo_urls: list[str]
    timeline: list[TimelineStep]
    feedback: FeedbackOut | None
    updates: list[PublicUpdate] = Field(description="Public updates and questions staff wrote, oldest first.")
    replies: list[OwnReply] | None = Field(
        None, description="The rider's own replies (only with the report's credential)."
    )
    next_nudge_at: str | None = Field(
        None, description="With the credential: a nudge (催办) before this time is refused (429)."
    )
    topic: PublicTopic | None = Field(None, description="The topic (议题) the case is in, if any.")


class OpenCase(BaseModel):
    """An open case at a place, offered for '+1' (no rider's words or details)."""

    case_id: str
    category: str
    category_name: str
    icon: str
    status: str
    opened_at: str
    ago: str
    distinct_riders: int


class PlaceOpenCases(BaseModel):
    """The open cases at a place."""

    place_id: str
    items: list[OpenCase]


class Located(BaseModel):
    """The grid and station a point falls in."""

    lat: float
    lon: float
    grid_id: str | None
    station_id: str | None
    station_name: str | None


class MyReport(BaseModel):
    """One of this rider's reports."""

    report_id: str
    category: str
    place_id: str | None
    status: str
    case_id: str | None
    submitted_at: str
    tracking_url: str


class MyReports(BaseModel):
    """This rider's reports, newest first."""

    items: list[MyReport]


# --- reading a report request --------------------------------------------------------------------


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "on", "yes")


def too_large(cap: int) -> Refusal:
    """The 413 of a request body over `cap` bytes (the message states the cap)."""
    return Refusal("too_large", 413, "payload_too_large", too_large_message(cap))


def parse_json(raw: bytes) -> Any:
    """A JSON body; 400 when it is not JSON or nested too deeply for the parser (never a 500)."""
    try:
        return json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise Refusal("invalid", 400, "invalid_json", "The body is not valid JSON.") from exc


async def read_model(request: Request, model: type[M], cap: int, optional: bool = False) -> M | None:
    """A JSON body as `model`, read only up to `cap` bytes (413 beyond): 400 when not JSON, 422 when
    not valid. Routes call it after their auth checks, so an anonymous body is never read whole."""
    raw = await capped_body(request, cap)
    if optional and not raw.strip():
        return None
    data = parse_json(raw)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise ApiError(422, "invalid", "The request is not valid.", details) from exc


def json_body_doc(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads `model` itself (after its auth checks)."""
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


async def capped_body(request: Request, cap: int) -> bytes:
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
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise Refusal("invalid", 422, "invalid", "The body must be a JSON object.")
    return _validated(data)


def check_idempotency_key(key: str | None) -> None:
    """422 for an Idempotency-Key header of the wrong length."""
    if key is not None and not 1 <= len(key) <= 100:
        raise Refusal("invalid", 422, "invalid", "Idempotency-Key has 1 to 100 characters.")


def _validated(fields: dict[str, Any]) -> ReportIn:
    try:
        return ReportIn.model_validate(fields)
    except ValidationError as exc:
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise Refusal("invalid", 422, "invalid", "The report is not valid.", details) from exc


async def read_report_request(request: Request, max_json_bytes: int) -> tuple[ReportIn, list[CleanPhoto]]:
    """A report from a JSON body, or from a multipart form with up to 3 photos (checked and cleaned)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        return report_from_json(await capped_body(request, max_json_bytes)), []
    if ctype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise Refusal(
            "invalid", 415, "unsupported_media_type", "Send JSON, or a multipart form (with photos)."
        )
    request._body = await capped_body(request, MAX_REQUEST_BYTES)  # form() reads the capped copy
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
        raise Refusal("too_many_photos", 422, "too_many_photos", f"At most {MAX_PHOTOS} photos.")
    raws = []
    for index, upload in enumerate(uploads):
        raw = await upload.read(MAX_PHOTO_BYTES + 1)
        if len(raw) > MAX_PHOTO_BYTES:
            raise Refusal(
                "photo_too_large",
                413,
                "photo_too_large",
                f"Photo {index + 1} is larger than {size_text(MAX_PHOTO_BYTES)}.",
            )
        raws.append(raw)

    def clean() -> list[CleanPhoto]:
        return [clean_photo(raw, f"photo {i + 1}") for i, raw in enumerate(raws)]

    try:
        photos = await asyncio.to_thread(clean)
    except PhotoError as exc:
        reason = "photo_too_large" if exc.status == 413 else "not_an_image"
        raise Refusal(reason, exc.status, exc.code, exc.message) from exc
    return body, photos


# --- routes --------------------------------------------------------------------------------------


def _report_in_schema() -> dict[str, Any]:
    """ReportIn's JSON Schema for the OpenAPI document, its one nested model (Location) inline."""
    schema = ReportIn.model_json_schema()
    schema["properties"]["location"]["anyOf"][0] = schema.pop("$defs")["Location"]
    return schema


_REPORT_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "JSON (ReportIn), or multipart/form-data with the same fields (location as "
        "lat and lon) and up to 3 files named `photos` (JPEG/PNG/WebP, at most 10 MB each).",
        "content": {
            "application/json": {"schema": _report_in_schema()},
            "multipart/form-data": {"schema": {"type": "object"}},
        },
    }
}


@router.post(
    "/api/v1/reports", status_code=202, response_model=ReportAccepted, openapi_extra=_REPORT_BODY_DOC
)
async def post_report(ctx: Ctx, request: Request, response: Response) -> ReportAccepted:
    """Accept a rider's report: stored before this answer, routed in the background."""
    with count_refusals():
        key = request.headers.get("Idempotency-Key")
        check_idempotency_key(key)
        body, photos = await read_report_request(request, ctx.config.max_json_bytes)
        intake, new_token = ctx.intake_context(request.cookies.get(RIDER_COOKIE), request.scope)
        intake.photos = photos
        if new_token is not None:
            ctx.set_rider_cookie(response, new_token)
        return await ctx.submit(body, intake, key)


@router.get("/api/v1/reports/{report_id}", response_model=PublicReport)
async def get_report(ctx: Ctx, report_id: str, request: Request) -> dict[str, Any]:
    """Status and timeline of a report; the rider's own answer only with the report's credential
    (the rider cookie that sent it, or its tracking secret: X-Tracking-Key or ?k=)."""
    settings = ctx.settings

    def load(session: Session) -> dict[str, Any] | None:
        report = session.get(Report, report_id)
        if report is None:
            return None
        owner = ctx.owns(request, report)
        return load_public_report(
            session, report, settings.public_base_url, settings.closer_public_url, owner
        )

    view = await ctx.read(load)
    if view is None:
        raise ApiError(404, "not_found", "No such report.")
    return view


async def owned_report(ctx: Reporter, request: Request, report_id: str) -> Report:
    """The report when the caller holds its credential: 404 for an unknown one, 403 `not_your_report`."""
    report = await ctx.read(lambda s: s.get(Report, report_id))
    if report is None:
        raise ApiError(404, "not_found", "No such report.")
    if not ctx.owns(request, report):
        raise ApiError(
            403,
            "not_your_report",
            "Only the phone that sent this report, or its tracking link, can answer for it.",
        )
    return report


@router.post(
    "/api/v1/reports/{report_id}/feedback",
    response_model=FeedbackOut,
    openapi_extra=json_body_doc(FeedbackIn),
    responses={201: {"model": FeedbackOut, "description": "The answer was stored."}},
)
async def post_feedback(ctx: Ctx, report_id: str, request: Request, response: Response) -> dict[str, Any]:
    """The rider confirms the fix or says it is not fixed (a comment is required), with a 1–5 rating.
    Needs the report's credential: the rider cookie that sent it, or the tracking secret (header
    X-Tracking-Key, or ?k=); without it 403 `not_your_report`, before the body is read."""
    await owned_report(ctx, request, report_id)
    body = await read_model(request, FeedbackIn, ctx.config.max_form_bytes)
    assert body is not None
    row, created = await ctx.write(lambda s: give_feedback(s, report_id, body))
    response.status_code = 201 if created else 200
    return feedback_json(row)


@router.get(
    "/api/v1/photos/{photo_id}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "The photo (JPEG)."}},
)
async def get_photo(ctx: Ctx, photo_id: str) -> Response:
    """A rider's photo (re-encoded JPEG, no metadata)."""
    photo = await ctx.read(lambda s: s.get(Photo, photo_id))
    if photo is None:
        raise ApiError(404, "not_found", "No such photo.")
    return Response(
        photo.data,
        media_type=photo.content_type,
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


def open_cases_json(ctx: Reporter, rows: list[tuple[CaseView, int]], lang: str) -> list[dict[str, Any]]:
    """The open cases as the API shows them (no rider's words or details)."""
    now = utcnow()
    out = []
    for view, riders in rows:
        category = ctx.jurisdiction.categories.get(view.category)
        out.append(
            {
                "case_id": view.case_id,
                "category": view.category,
                "category_name": category.name(lang) if category else view.category,
                "icon": category.icon if category else "❓",
                "status": view.status,
                "opened_at": as_utc(view.opened_at).isoformat(),
                "ago": ago(as_utc(view.opened_at), now, lang),
                "distinct_riders": riders,
            }
        )
    return out


@router.get("/api/v1/places/{place_id}/open-cases", response_model=PlaceOpenCases)
async def place_open_cases(ctx: Ctx, place_id: str, lang: Lang) -> dict[str, Any]:
    """Open cases at a place, to offer '+1' instead of a duplicate report."""

    def load(session: Session) -> list[tuple[CaseView, int]] | None:
        place = session.get(Place, place_id)
        return open_cases(session, place_id) if place else None

    rows = await ctx.read(load)
    if rows is None:
        raise ApiError(404, "unknown_place", "No such place.")
    return {"place_id": place_id, "items": open_cases_json(ctx, rows, lang)}


@router.get("/api/v1/locate", response_model=Located)
async def locate(
    ctx: Ctx,
    lat: Annotated[float, Query(ge=-90, le=90)],
    lon: Annotated[float, Query(ge=-180, le=180)],
) -> dict[str, Any]:
    """Which grid and station a point falls in (the GPS fallback shows it before sending)."""
    j = ctx.jurisdiction
    grid = j.grid_at(lat, lon)
    station = j.stations.get(grid.station_id) if grid else None
    return {
        "lat": lat,
        "lon": lon,
        "grid_id": grid.id if grid else None,
        "station_id": station.id if station else None,
        "station_name": station.name_zh if station else None,
    }


@router.get("/api/v1/me/reports", response_model=MyReports)
async def my_reports_api(ctx: Ctx, rider: RiderRef) -> dict[str, Any]:
    """This rider's reports (by the rider cookie), newest first."""
    rows = await ctx.read(lambda s: my_report_rows(s, rider))
    return {
        "items": [
            {
                "report_id": r.report_id,
                "category": r.category,
                "place_id": r.place_id,
                "status": r.status,
                "case_id": r.case_id,
                "submitted_at": as_utc(r.submitted_at).isoformat(),
                "tracking_url": f"{ctx.base_url}/t/{r.report_id}",
            }
            for r, _place in rows
        ]
    }


# --- issue 17: riders recognised ------------------------------------------------------------------


class MyContributions(BaseModel):
    """What this rider (the rider cookie) gave: reports, cases fixed, thanks, and their recognition code."""

    reports: int = Field(description="Reports sent from this phone.")
    fixed: int = Field(description="Cases among them closed as fixed.")
    thanks: int = Field(description="Cases among them whose riders staff thanked (致谢).")
    recognition_code: str | None = Field(
        description="The short form of the rider's pseudonym, to show for 表彰 (null without reports)."
    )


@router.get("/api/v1/me/contributions", response_model=MyContributions)
async def my_contributions_api(ctx: Ctx, rider: RiderRef) -> dict[str, Any]:
    """This rider's contributions (by the rider cookie): what /my shows."""
    mine = await ctx.read(lambda s: recognition.contributions(s, rider))
    return {
        "reports": mine.reports,
        "fixed": mine.fixed,
        "thanks": mine.thanks,
        "recognition_code": recognition_code(rider) if mine.reports else None,
    }
