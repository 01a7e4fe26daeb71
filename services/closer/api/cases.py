"""Cases over HTTP: the queue (and its live stream), one case, its timeline, transitions, export."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from gridloop.clock import utcnow
from gridloop.errors import ApiError
from gridloop.photos import MAX_PHOTO_BYTES
from gridloop.tokens import Principal, read_token
from schemas.cases import ClockMode
from services.closer import actions, queue, stream
from services.closer.context import Ctx, Reader, Who, session_token
from services.closer.scope import oversees

router = APIRouter(tags=["cases"])

_TRANSITION_DOC: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/json": {"schema": actions.TransitionBody.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        **actions.TransitionBody.model_json_schema()["properties"],
                        "photo": {"type": "string", "format": "binary"},
                    },
                    "required": ["action", "version"],
                }
            },
        },
        "required": True,
    }
}


class CaseView(BaseModel):
    """A case as the queue lists it (times are ISO 8601 in UTC; colour is the SLA colour now)."""

    case_id: str
    station_id: str
    category: str
    status: str
    priority: str
    clock: ClockMode = Field(
        description="The SLA clock: working (working hours on working days) or calendar (around the clock)."
    )
    triage: bool
    version: int
    place_name: str | None
    description: str
    lat: float | None
    lon: float | None
    grid_id: str | None
    submitted_at: str
    ack_due: str | None
    resolve_due: str | None
    due_at: str | None
    warn_at: str | None
    colour: str
    supervised: bool
    nudges: int = Field(description="Riders' nudges (催办) so far; each puts the case on supervision.")
    nudged_at: str | None = Field(description="The latest nudge.")
    assignee: str | None
    moves: int
    return_reason: str | None
    reject_reason: str | None
    extensions_granted: int
    extension_hours: float
    extension_pending_hours: float | None
    confirm_due: str | None
    acknowledged_at: str | None
    dispatched_at: str | None
    resolved_at: str | None
    closed_at: str | None
    reopen_count: int
    rating: int | None
    after_photo_ids: list[str]
    distinct_riders: int
    report_count: int
    common_issue: bool
    danger_now: bool
    route_reason: str


class CaseActions(CaseView):
    """A case with the actions the caller may take now (the answer to a transition)."""

    allowed_actions: list[str]
    needs_after_photo: bool


class ReportView(BaseModel):
    """A rider's report in a case, with the rider's answer once given."""

    report_id: str
    submitted_at: str
    rider: str = Field(description="A short, stable rider tag: tells riders apart, identifies no one.")
    description: str
    photo_ids: list[str]
    fixed: bool | None
    rating: int | None
    comment: str | None


class TimelineRow(BaseModel):
    """One step in a case's history."""

    at: str
    action: str
    status: str
    actor: str
    note: str | None
    reason: str | None
    station_id: str | None
    prev_station_id: str | None
    version: int | None


class ThanksView(BaseModel):
    """Staff's thank-you to a case's riders (致谢), at most one per case."""

    preset: str
    text: str
    actor: str
    at: str


class ThanksAnswer(BaseModel):
    """The thank-you sent and the case's version after it."""

    thanks: ThanksView
    version: int


class MessageView(BaseModel):
    """One entry of a case's conversation."""

    id: int
    kind: str = Field(description="note (internal), public, question, reply (a rider's), nudge (催办).")
    public: bool = Field(description="Riders see it (public updates and questions).")
    text: str
    actor: str = Field(description="The staff account, or 'rider'.")
    at: str
    report_id: str | None = Field(description="The rider's report of a reply or a nudge.")
    question_id: int | None = Field(description="The question a reply answers.")
    photo_urls: list[str] = Field(description="A reply's photos (served by the reporter).")


class CaseDetail(CaseActions):
    """One case with its reports, riders, photos, timeline and conversation."""

    reports: list[ReportView]
    report_ids: list[str]
    timeline: list[TimelineRow]
    messages: list[MessageView]
    thanks: ThanksView | None = Field(None, description="Staff's thank-you to the riders, once sent.")


class Conversation(BaseModel):
    """A case's conversation, oldest first."""

    case_id: str
    messages: list[MessageView]


class MessageAnswer(BaseModel):
    """The entry written and the case's version after it."""

    message: MessageView
    version: int


class QueuePage(BaseModel):
    """One page of a queue, most urgent first, and the cursor of the next page."""

    station: str | None
    items: list[CaseView]
    next_cursor: str | None


class QueueCounts(BaseModel):
    """Open cases per state, and how many active ones are yellow and red."""

    station: str | None
    states: dict[str, int]
    red: int
    yellow: int
    active: int


class Timeline(BaseModel):
    """A case's history, oldest first."""

    case_id: str
    timeline: list[TimelineRow]


class BulkResult(BaseModel):
    """One case of a bulk sign-for: its new version, or why it failed."""

    case_id: str
    ok: bool
    version: int | None = None
    code: str | None = None
    message: str | None = None


class BulkAnswer(BaseModel):
    """Each case's result, in the order asked."""

    results: list[BulkResult]


def _view_allowed(who: Principal, view: str) -> None:
    if view not in queue.VIEWS:
        raise ApiError(422, "invalid_view", f"view must be one of {', '.join(queue.VIEWS)}.")
    if view not in queue.STAFF_VIEWS and not oversees(who):
        raise ApiError(403, "forbidden", "Only the centre's supervisors see this list.")


@router.get("/api/v1/queue", response_model=QueuePage)
async def get_queue(
    ctx: Ctx,
    who: Reader,
    station: str | None = Query(None, max_length=40),
    street: str | None = Query(
        None, max_length=40, description="Only this street's stations (a city filter)."
    ),
    status: str = Query("open", max_length=20, description="'open' (default), 'all', or one state."),
    category: str | None = Query(None, max_length=40),
    view: str = Query(
        "queue",
        max_length=20,
        description="queue, duty (值班: out of hours), triage, returns, extensions, ...",
    ),
    sort: str = Query("due", pattern="^due$"),
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = Query(None, max_length=200),
) -> dict[str, Any]:
    """A station's cases, most urgent first (by due time), paginated by cursor."""
    queue.check_status(status)
    _view_allowed(who, view)
    named = ctx.station_scope(who, station)
    stations = ctx.scope(who, station, street)
    # grid staff's duty list also holds what they got on duty themselves; an overseer's is their streets'
    duty_user = who.username if view == "duty" and who.role == "staff" else None
    f = queue.QueueFilter(stations, status, category or None, view, duty_user)

    def work() -> dict[str, Any]:
        with ctx.runtime.db.session() as session:
            rows, next_cursor = queue.page(session, f, cursor, limit)
        now = utcnow()
        return {"station": named, "items": queue.as_list(rows, now), "next_cursor": next_cursor}

    return await asyncio.to_thread(work)


@router.get("/api/v1/queue/counts", response_model=QueueCounts)
async def get_counts(
    ctx: Ctx,
    who: Reader,
    station: str | None = Query(None, max_length=40),
    street: str | None = Query(None, max_length=40),
) -> dict[str, Any]:
    """Open cases per state, and how many are yellow and red (of the caller's stations or streets)."""
    named = ctx.station_scope(who, station)
    stations = ctx.scope(who, station, street)

    def work() -> dict[str, Any]:
        with ctx.runtime.db.session() as session:
            return {"station": named, **queue.counts(session, stations, utcnow())}

    return await asyncio.to_thread(work)


@router.get(
    "/api/v1/queue/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events."}},
)
async def queue_stream(
    request: Request,
    ctx: Ctx,
    who: Reader,
    station: str | None = Query(None, max_length=40),
    street: str | None = Query(None, max_length=40),
) -> StreamingResponse:
    """Live changes to a station's queue (or the caller's streets') as server-sent events (`change`,
    with the case id and state); an `end` event (with the reason) closes it once the token is revoked
    or expired."""
    scope = ctx.scope(who, station, street)
    last = request.headers.get("Last-Event-ID")
    start = int(last) if last and last.isdigit() else None
    token = session_token(request, allow_cookie=True) or ""

    async def still_valid() -> str | None:
        try:
            await asyncio.to_thread(read_token, token, ctx.secret, ctx.token_current)
        except ApiError as exc:
            return exc.code
        return None

    events = stream.queue_events(
        ctx.runtime.db,
        ctx.poller,
        scope,
        start,
        ctx.config.stream_poll_seconds,
        request.is_disconnected,
        still_valid,
    )
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/api/v1/cases/export.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "CSV, UTF-8 with BOM."}},
)
async def export_csv(
    ctx: Ctx,
    who: Reader,
    start: date = Query(alias="from", description="First day (local date), inclusive."),
    end: date = Query(alias="to", description="Last day (local date), inclusive."),
    station: str | None = Query(None, max_length=40),
    street: str | None = Query(None, max_length=40),
) -> StreamingResponse:
    """Cases submitted in a date range as CSV (UTF-8 with BOM), of the caller's stations or streets."""
    if end < start:
        raise ApiError(422, "invalid_range", "'to' is before 'from'.")
    if (end - start).days > 366:
        raise ApiError(422, "invalid_range", "Export at most a year at a time.")
    named = ctx.station_scope(who, station)
    scope = ctx.scope(who, station, street)
    tz = ZoneInfo(ctx.config.work_timezone)
    lo = datetime.combine(start, time(0), tz)
    hi = datetime.combine(end + timedelta(days=1), time(0), tz)

    name = f"cases-{named or street or 'all'}-{start.isoformat()}-{end.isoformat()}.csv"
    # a sync iterator: Starlette pulls each chunk (one batch query) in a worker thread
    return StreamingResponse(
        queue.export_csv(ctx.runtime.db, scope, lo, hi),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


@router.get("/api/v1/cases/{case_id}", response_model=CaseDetail)
async def get_case(ctx: Ctx, who: Reader, case_id: str) -> dict[str, Any]:
    """One case with its reports, riders, photos, timeline and the caller's allowed actions."""

    def work() -> dict[str, Any]:
        with ctx.runtime.db.session() as session:
            case = actions.load_visible(session, who, case_id, j=ctx.jurisdiction)
            return actions.detail_view(ctx, session, who, case, utcnow())

    return await asyncio.to_thread(work)


@router.get("/api/v1/cases/{case_id}/timeline", response_model=Timeline)
async def get_timeline(ctx: Ctx, who: Reader, case_id: str) -> dict[str, Any]:
    """The case's history, oldest first."""

    def work() -> list[dict[str, Any]]:
        with ctx.runtime.db.session() as session:
            actions.load_visible(session, who, case_id, j=ctx.jurisdiction)
            return actions.timeline(session, case_id)

    return {"case_id": case_id, "timeline": await asyncio.to_thread(work)}


@router.get("/api/v1/cases/{case_id}/messages", response_model=Conversation)
async def get_messages(ctx: Ctx, who: Reader, case_id: str) -> dict[str, Any]:
    """The case's conversation (internal notes included: staff only), oldest first."""

    def work() -> list[dict[str, Any]]:
        with ctx.runtime.db.session() as session:
            actions.load_visible(session, who, case_id, j=ctx.jurisdiction)
            return actions.messages(session, case_id, ctx.settings.public_base_url)

    return {"case_id": case_id, "messages": await asyncio.to_thread(work)}


@router.post("/api/v1/cases/{case_id}/messages", response_model=MessageAnswer, status_code=201)
async def post_message(ctx: Ctx, who: Who, case_id: str, body: actions.MessageBody) -> dict[str, Any]:
    """Write on a case: an internal note (never shown to riders), a public update (on the riders'
    tracking pages) or a question to the riders. Another station's case is 404, a stale version 409."""
    return await asyncio.to_thread(actions.say, ctx, who, case_id, body)


async def read_transition(request: Request) -> tuple[actions.TransitionBody, bytes | None]:
    """The body of a transition: JSON, or a multipart form with an optional `photo` (413 past the
    photo limit of gridloop.photos; the photo itself is checked when it is stored)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        length = request.headers.get("content-length")
        # one photo and the form's few fields: refused before a byte of the body is read
        if length and length.isdigit() and int(length) > MAX_PHOTO_BYTES + 64 * 1024:
            raise _too_large()
        form = await request.form(max_files=1, max_fields=20)
        fields = {k: v for k, v in form.items() if isinstance(v, str) and v != ""}
        upload = form.get("photo")
        data: bytes | None = None
        if isinstance(upload, UploadFile):
            data = await upload.read(MAX_PHOTO_BYTES + 1)
            await upload.close()
            if len(data) > MAX_PHOTO_BYTES:
                raise _too_large()
            if not data:
                data = None
        raw: Any = fields
    else:
        data = None
        try:
            raw = await request.json()
        except (ValueError, RecursionError) as exc:  # deep nesting exhausts the parser: bad input too
            raise ApiError(400, "invalid_json", "The body is not valid JSON.") from exc
    try:
        return actions.TransitionBody.model_validate(raw), data
    except ValidationError as exc:
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise ApiError(422, "invalid", "The request is not valid.", details) from exc


def _too_large() -> ApiError:
    return ApiError(
        413, "payload_too_large", f"The photo is larger than {MAX_PHOTO_BYTES // 1024 // 1024} MB."
    )


@router.post("/api/v1/cases/{case_id}/transitions", response_model=CaseActions, openapi_extra=_TRANSITION_DOC)
async def transition(request: Request, ctx: Ctx, who: Who, case_id: str) -> dict[str, Any]:
    """Take an action on a case: 409 names the allowed actions; a stale version is 409 too."""
    body, photo = await read_transition(request)
    return await asyncio.to_thread(actions.take_action, ctx, who, case_id, body, photo)


class BulkItem(BaseModel):
    """One case to sign for, at the version the caller saw."""

    case_id: str = Field(max_length=40)
    version: int = Field(ge=1)


class BulkBody(BaseModel):
    """Several cases to sign for at once."""

    items: list[BulkItem] = Field(min_length=1, max_length=100)


# exclude_unset: a result carries either its version or its error, as before
@router.post("/api/v1/cases/bulk-acknowledge", response_model=BulkAnswer, response_model_exclude_unset=True)
async def bulk_acknowledge(ctx: Ctx, who: Who, body: BulkBody) -> dict[str, Any]:
    """Sign for several cases; each one succeeds or fails on its own."""
    items = [(i.case_id, i.version) for i in body.items]
    return {"results": await asyncio.to_thread(actions.bulk_acknowledge, ctx, who, items)}


@router.post("/api/v1/cases/{case_id}/thanks", response_model=ThanksAnswer, status_code=201)
async def post_thanks(ctx: Ctx, who: Who, case_id: str, body: actions.ThanksBody) -> dict[str, Any]:
    """Thank the case's riders (致谢): a preset and optional words, shown on every rider's own
    tracking page. Once per case (409 `already_thanked`); another street's or station's case is 404."""
    return await asyncio.to_thread(actions.thank, ctx, who, case_id, body)
