"""The closer's JSON API: sign-in, queue (and its live stream), cases, transitions, export, photos."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from gridloop.clock import utcnow
from gridloop.errors import ApiError
from gridloop.tokens import Principal
from services.closer import actions, photos, queue, stream
from services.closer.auth import issue_token
from services.closer.context import Closer, Ctx, Reader, Who
from services.closer.staff import check_login

router = APIRouter()

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


async def login(ctx: Closer, username: str, password: str) -> tuple[str, str, list[str]]:
    """Check a login (slow-down and lock-out included); (username, role, stations) or 401/429."""

    def work() -> tuple[Any, float]:
        with ctx.runtime.db.session(write=True) as session:
            staff, delay = check_login(session, username, password)
            if staff is None:
                return None, delay
            return (staff.username, staff.role, staff.station_ids), 0.0

    found, delay = await asyncio.to_thread(work)
    if found is None:
        await asyncio.sleep(delay)
        raise ApiError(
            401, "bad_credentials", "Wrong username or password.", headers={"WWW-Authenticate": "Bearer"}
        )
    name, role, stations = found
    return name, role, stations


@router.post("/api/v1/auth/token", tags=["auth"])
async def token(ctx: Ctx, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> dict[str, Any]:
    """Exchange a username and password for an expiring bearer token."""
    name, role, stations = await login(ctx, form.username, form.password)
    ttl = ctx.settings.token_ttl_seconds
    return {
        "access_token": issue_token(name, role, stations, ctx.secret, ttl),  # type: ignore[arg-type]
        "token_type": "bearer",
        "expires_in": ttl,
        "role": role,
        "stations": stations,
    }


def _view_allowed(who: Principal, view: str) -> None:
    if view not in queue.VIEWS:
        raise ApiError(422, "invalid_view", f"view must be one of {', '.join(queue.VIEWS)}.")
    if view != "queue" and who.role not in ("supervisor", "admin"):
        raise ApiError(403, "forbidden", "Only the centre's supervisors see this list.")


@router.get("/api/v1/queue", tags=["cases"])
async def get_queue(
    ctx: Ctx,
    who: Reader,
    station: str | None = Query(None, max_length=40),
    status: str = Query("open", max_length=20, description="'open' (default), 'all', or one state."),
    category: str | None = Query(None, max_length=40),
    view: str = Query("queue", max_length=20, description="queue, triage, returns, extensions, ..."),
    sort: str = Query("due", pattern="^due$"),
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = Query(None, max_length=200),
) -> dict[str, Any]:
    """A station's cases, most urgent first (by due time), paginated by cursor."""
    queue.check_status(status)
    _view_allowed(who, view)
    scope = ctx.station_scope(who, station)
    f = queue.QueueFilter(scope, status, category or None, view)

    def work() -> dict[str, Any]:
        with ctx.runtime.db.session() as session:
            rows, next_cursor = queue.page(session, f, cursor, limit)
        now = utcnow()
        return {"station": scope, "items": queue.as_list(rows, now), "next_cursor": next_cursor}

    return await asyncio.to_thread(work)


@router.get("/api/v1/queue/counts", tags=["cases"])
async def get_counts(
    ctx: Ctx, who: Reader, station: str | None = Query(None, max_length=40)
) -> dict[str, Any]:
    """Open cases per state, and how many are yellow and red."""
    scope = ctx.station_scope(who, station)

    def work() -> dict[str, Any]:
        with ctx.runtime.db.session() as session:
            return {"station": scope, **queue.counts(session, scope, utcnow())}

    return await asyncio.to_thread(work)


@router.get("/api/v1/queue/stream", tags=["cases"])
async def queue_stream(
    request: Request, ctx: Ctx, who: Reader, station: str | None = Query(None, max_length=40)
) -> StreamingResponse:
    """Live changes to a station's queue as server-sent events (`change`, with the case id and state)."""
    scope = ctx.station_scope(who, station)
    last = request.headers.get("Last-Event-ID")
    start = int(last) if last and last.isdigit() else None
    ctx.feed.bind(asyncio.get_running_loop())
    events = stream.queue_events(
        ctx.runtime.db, ctx.feed, scope, start, ctx.config.stream_poll_seconds, request.is_disconnected
    )
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/api/v1/cases/export.csv", tags=["cases"])
async def export_csv(
    ctx: Ctx,
    who: Reader,
    start: date = Query(alias="from", description="First day (local date), inclusive."),
    end: date = Query(alias="to", description="Last day (local date), inclusive."),
    station: str | None = Query(None, max_length=40),
) -> StreamingResponse:
    """Cases submitted in a date range as CSV (UTF-8 with BOM)."""
    if end < start:
        raise ApiError(422, "invalid_range", "'to' is before 'from'.")
    if (end - start).days > 366:
        raise ApiError(422, "invalid_range", "Export at most a year at a time.")
    scope = ctx.station_scope(who, station)
    tz = ZoneInfo(ctx.config.work_timezone)
    lo = datetime.combine(start, time(0), tz)
    hi = datetime.combine(end + timedelta(days=1), time(0), tz)

    def work() -> list[str]:
        with ctx.runtime.db.session() as session:
            rows = session.exec(queue.export_statement(scope, lo, hi))
            return list(queue.csv_chunks(rows))

    chunks = await asyncio.to_thread(work)
    name = f"cases-{scope or 'all'}-{start.isoformat()}-{end.isoformat()}.csv"
    return StreamingResponse(
        iter(chunks),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


@router.get("/api/v1/cases/{case_id}", tags=["cases"])
async def get_case(ctx: Ctx, who: Reader, case_id: str) -> dict[str, Any]:
    """One case with its reports, riders, photos, timeline and the caller's allowed actions."""

    def work() -> dict[str, Any]:
        with ctx.runtime.db.session() as session:
            case = actions.load_visible(session, who, case_id)
            return actions.detail_view(ctx, session, who, case, utcnow())

    return await asyncio.to_thread(work)


@router.get("/api/v1/cases/{case_id}/timeline", tags=["cases"])
async def get_timeline(ctx: Ctx, who: Reader, case_id: str) -> dict[str, Any]:
    """The case's history, oldest first."""

    def work() -> list[dict[str, Any]]:
        with ctx.runtime.db.session() as session:
            actions.load_visible(session, who, case_id)
            return actions.timeline(session, case_id)

    return {"case_id": case_id, "timeline": await asyncio.to_thread(work)}


async def read_transition(request: Request, max_bytes: int) -> tuple[actions.TransitionBody, bytes | None]:
    """The body of a transition: JSON, or a multipart form with an optional `photo` (413 past max_bytes)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_bytes + 64 * 1024:
            raise ApiError(
                413, "payload_too_large", f"The photo is larger than {max_bytes // 1024 // 1024} MB."
            )
        form = await request.form(max_files=1, max_fields=20)
        fields = {k: v for k, v in form.items() if isinstance(v, str) and v != ""}
        upload = form.get("photo")
        data: bytes | None = None
        if isinstance(upload, UploadFile):
            data = await upload.read(max_bytes + 1)
            await upload.close()
            if len(data) > max_bytes:
                raise ApiError(
                    413, "payload_too_large", f"The photo is larger than {max_bytes // 1024 // 1024} MB."
                )
            if not data:
                data = None
        raw: Any = fields
    else:
        data = None
        try:
            raw = await request.json()
        except ValueError as exc:
            raise ApiError(400, "bad_json", "The body is not JSON.") from exc
    try:
        return actions.TransitionBody.model_validate(raw), data
    except ValidationError as exc:
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise ApiError(422, "invalid", "The request is not valid.", details) from exc


@router.post("/api/v1/cases/{case_id}/transitions", tags=["cases"], openapi_extra=_TRANSITION_DOC)
async def transition(request: Request, ctx: Ctx, who: Who, case_id: str) -> dict[str, Any]:
    """Take an action on a case: 409 names the allowed actions; a stale version is 409 too."""
    body, photo = await read_transition(request, ctx.config.photo_max_bytes)
    return await asyncio.to_thread(actions.take_action, ctx, who, case_id, body, photo)


class BulkItem(BaseModel):
    """One case to sign for, at the version the caller saw."""

    case_id: str = Field(max_length=40)
    version: int = Field(ge=1)


class BulkBody(BaseModel):
    """Several cases to sign for at once."""

    items: list[BulkItem] = Field(min_length=1, max_length=100)


@router.post("/api/v1/cases/bulk-acknowledge", tags=["cases"])
async def bulk_acknowledge(ctx: Ctx, who: Who, body: BulkBody) -> dict[str, Any]:
    """Sign for several cases; each one succeeds or fails on its own."""
    items = [(i.case_id, i.version) for i in body.items]
    return {"results": await asyncio.to_thread(actions.bulk_acknowledge, ctx, who, items)}


@router.get("/photos/{photo_id}.jpg", tags=["photos"], response_class=FileResponse)
async def photo(ctx: Ctx, photo_id: str) -> FileResponse:
    """An after-photo (public: the unguessable id is the capability; riders see it when confirming)."""
    path = photos.photo_path(ctx.settings.var_dir, photo_id)
    if path is None or not await asyncio.to_thread(path.is_file):
        raise ApiError(404, "not_found", "No such photo.")
    return FileResponse(
        path,
        media_type="image/jpeg",
        headers={"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"},
    )
