"""The duty roster API (值班): who is on duty, add or remove a shift, upload a roster CSV.

Reading is for any signed-in account; changing a street's roster is for an admin or a supervisor of
that street (one of their stations is in it). Staff get 403; a supervisor of another street gets
404, as for a station that is not theirs. `gridloop duty import FILE` does the upload from a shell.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from gridloop.clock import as_utc, utcnow
from gridloop.errors import ApiError
from gridloop.plumbing import RowId
from gridloop.tokens import Principal
from services.closer import duty, dutystore
from services.closer.context import Closer, Ctx, Reader, Who
from services.closer.scope import visible_streets

router = APIRouter(tags=["duty"])
MAX_CSV = 1_000_000


class ShiftView(BaseModel):
    """One shift of a street's roster."""

    id: int | None
    street_id: str
    start: datetime
    end: datetime
    station_id: str | None
    username: str | None


class OnDutyView(BaseModel):
    """Who is on duty now: a roster shift's holder, or the operations centre when none covers now."""

    street_id: str
    station_id: str | None
    username: str | None
    source: str = Field(description='"roster", or "centre" (no shift: the street\'s operations centre).')
    until: datetime | None


class RosterView(BaseModel):
    """A street's duty now and its shifts not over yet."""

    street_id: str
    now: OnDutyView
    shifts: list[ShiftView]


class NewShift(BaseModel):
    """A shift to add: exactly one of station_id and username."""

    start: datetime = Field(description="With a UTC offset.")
    end: datetime
    station_id: str | None = Field(None, max_length=40)
    username: str | None = Field(None, max_length=60)


class Imported(BaseModel):
    """What an upload added."""

    street_id: str
    shifts: int


def _view(s: duty.Shift) -> dict[str, Any]:
    return {
        "id": s.id,
        "street_id": s.street_id,
        "start": s.start,
        "end": s.end,
        "station_id": s.station_id,
        "username": s.username,
    }


def _street(ctx: Closer, street: str) -> None:
    if street not in ctx.jurisdiction.streets:
        raise ApiError(404, "not_found", "No such street.")


def _visible_street(ctx: Closer, who: Principal, street: str) -> None:
    """404 for a street that is unknown or outside the caller's scope (services/closer/scope.py)."""
    _street(ctx, street)
    if street not in visible_streets(who, ctx.jurisdiction):
        raise ApiError(404, "not_found", "No such street.")


def may_edit(ctx: Closer, who: Principal, street: str) -> None:
    """Raise unless the caller may change this street's roster (403 staff, 404 another street's):
    a supervisor or admin of the street, or a city account."""
    _street(ctx, street)
    if who.role == "staff":
        raise ApiError(
            403, "forbidden", "Only a supervisor of the street or an admin changes its duty roster."
        )
    _visible_street(ctx, who, street)


def _refused(exc: duty.RosterError) -> ApiError:
    return ApiError(422, "roster_refused", "Nothing was saved: " + str(exc), details=exc.problems)


@router.get("/api/v1/duty/{street}", response_model=RosterView)
async def get_roster(ctx: Ctx, who: Reader, street: str) -> dict[str, Any]:
    """Who is on duty for a street now, and its shifts not over yet (any account of the street)."""
    _visible_street(ctx, who, street)
    now = utcnow()

    def work() -> dict[str, Any]:
        with ctx.runtime.db.session() as session:
            on = dutystore.current(session, ctx.jurisdiction, street, now)
            shifts = dutystore.upcoming(session, street, now)
        return {
            "street_id": street,
            "now": {
                "street_id": on.street_id,
                "station_id": on.station_id,
                "username": on.username,
                "source": on.source,
                "until": on.until,
            },
            "shifts": [_view(s) for s in shifts],
        }

    return await asyncio.to_thread(work)


@router.post("/api/v1/duty/{street}/shifts", response_model=ShiftView, status_code=201)
async def add_shift(ctx: Ctx, who: Who, street: str, body: NewShift) -> dict[str, Any]:
    """Add a shift to a street's roster (supervisor of the street, admin)."""
    may_edit(ctx, who, street)
    if body.start.tzinfo is None or body.end.tzinfo is None:
        raise ApiError(422, "offset_required", "start and end need a UTC offset.")
    shift = duty.Shift(street, as_utc(body.start), as_utc(body.end), body.station_id, body.username)

    def work() -> int:
        with ctx.runtime.db.session(write=True) as session:
            return dutystore.add(session, ctx.jurisdiction, shift, who.username, utcnow())

    try:
        shift_id = await asyncio.to_thread(work)
    except duty.RosterError as exc:
        raise _refused(exc) from exc
    return _view(
        duty.Shift(shift.street_id, shift.start, shift.end, shift.station_id, shift.username, shift_id)
    )


@router.delete("/api/v1/duty/{street}/shifts/{shift_id}", status_code=204)
async def remove_shift(ctx: Ctx, who: Who, street: str, shift_id: RowId) -> Response:
    """Remove a shift from a street's roster (supervisor of the street, admin)."""
    may_edit(ctx, who, street)

    def work() -> bool:
        with ctx.runtime.db.session(write=True) as session:
            return dutystore.remove(session, street, shift_id)

    if not await asyncio.to_thread(work):
        raise ApiError(404, "not_found", "No such shift.")
    return Response(status_code=204)


async def add_roster(ctx: Closer, who: Principal, street: str, text: str) -> int:
    """Add a roster CSV's shifts for `street` in one transaction, the API's and the console's way
    (RosterError: none added); how many."""
    tz = ZoneInfo(ctx.config.work_timezone)

    def work() -> int:
        with ctx.runtime.db.session(write=True) as session:
            return dutystore.import_csv(session, ctx.jurisdiction, text, tz, who.username, utcnow(), street)

    return await asyncio.to_thread(work)


@router.post("/api/v1/duty/{street}/import", response_model=Imported)
async def import_roster(ctx: Ctx, who: Who, street: str, request: Request) -> dict[str, Any]:
    """Upload a roster CSV (body: text/csv, columns in services/closer/duty.py): every row is added, or
    none (422 naming each bad row by line)."""
    may_edit(ctx, who, street)
    body = await request.body()
    if len(body) > MAX_CSV:
        raise ApiError(413, "too_large", "A roster file is at most 1 MB.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(422, "not_utf8", "The file must be UTF-8 text.") from exc
    try:
        n = await add_roster(ctx, who, street, text)
    except duty.RosterError as exc:
        raise _refused(exc) from exc
    return {"street_id": street, "shifts": n}
