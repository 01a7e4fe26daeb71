"""Admin routes for places and their report codes: create, list, issue, deactivate, replace, QR images,
and a station's printable sheet."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel
from sqlmodel import Session, col, select

from gridloop.errors import ApiError
from gridloop.scope import can_see, visible_stations
from services.reporter import place_codes, qr
from services.reporter.api.reports import json_body_doc, read_model
from services.reporter.context import Admin, AdminOrSupervisor, Ctx, Staff
from services.reporter.models import Place
from services.reporter.place_codes import CodeChange, CodeIn, PlaceIn

router = APIRouter(tags=["admin"])


class PlaceOut(BaseModel):
    """A place as the admin API shows it."""

    place_id: str
    name_zh: str
    name_en: str
    lat: float
    lon: float
    grid_id: str | None
    station_id: str | None
    active: bool


class CodeOut(BaseModel):
    """A report code with its rider URL and QR images."""

    code: str
    printed: str
    place_id: str
    active: bool
    replaced_by: str | None
    note: str | None
    url: str
    svg: str
    png: str


class PlaceCreated(PlaceOut):
    """A new place and the code issued with it (None when none was asked for)."""

    code: CodeOut | None


class PlaceList(BaseModel):
    """Places, by id."""

    items: list[PlaceOut]


class CodeWithPlace(CodeOut):
    """A code and its place."""

    place: PlaceOut


class CodeList(BaseModel):
    """Codes with their places."""

    items: list[CodeWithPlace]


class CodeReplaced(BaseModel):
    """A damaged code and its successor."""

    old: CodeOut
    new: CodeOut


# admin posts read their bodies themselves, after the bearer token is checked (an anonymous body is
# never read), and only up to the form cap


@router.post(
    "/api/v1/places", status_code=201, response_model=PlaceCreated, openapi_extra=json_body_doc(PlaceIn)
)
async def create_place(ctx: Ctx, who: Admin, request: Request) -> dict[str, Any]:
    """Create a place (its grid and station from its coordinates) and, by default, a code for it;
    403 for a point in a street the admin does not manage."""
    body = await read_model(request, PlaceIn, ctx.config.max_form_bytes)
    assert body is not None
    allowed = visible_stations(who, ctx.jurisdiction)

    def work(session: Session) -> dict[str, Any]:
        place, code = place_codes.create_place(session, ctx.jurisdiction, body, allowed)
        return {
            **place_codes.place_json(place),
            "code": place_codes.code_json(code, ctx.base_url) if code else None,
        }

    return await ctx.write(work)


@router.get("/api/v1/places", response_model=PlaceList)
async def list_places(
    ctx: Ctx, who: AdminOrSupervisor, station_id: Annotated[str | None, Query()] = None
) -> dict[str, Any]:
    """Places of the caller's streets (gridloop/scope.py), optionally of one station."""

    def work(session: Session) -> list[dict[str, Any]]:
        query = select(Place).order_by(col(Place.place_id))
        if station_id:
            query = query.where(Place.station_id == station_id)
        return [
            place_codes.place_json(p)
            for p in session.exec(query)
            if can_see(who, ctx.jurisdiction, p.station_id)
        ]

    return {"items": await ctx.read(work)}


@router.post("/api/v1/codes", status_code=201, response_model=CodeOut, openapi_extra=json_body_doc(CodeIn))
async def issue_code(ctx: Ctx, who: Admin, request: Request) -> dict[str, Any]:
    """Issue a new report code for a place (of the admin's streets; another street's place is 404)."""
    body = await read_model(request, CodeIn, ctx.config.max_form_bytes)
    assert body is not None
    allowed = visible_stations(who, ctx.jurisdiction)
    return await ctx.write(
        lambda s: place_codes.code_json(
            place_codes.issue_code(s, body.place_id, allowed=allowed), ctx.base_url
        )
    )


@router.get("/api/v1/codes", response_model=CodeList)
async def list_codes(
    ctx: Ctx,
    who: AdminOrSupervisor,
    station_id: Annotated[str | None, Query()] = None,
    place_id: Annotated[str | None, Query()] = None,
    include_inactive: Annotated[bool, Query()] = False,
) -> dict[str, Any]:
    """Codes with their places, of the caller's streets (gridloop/scope.py)."""

    def work(session: Session) -> list[dict[str, Any]]:
        rows = place_codes.list_codes(session, station_id, place_id, include_inactive)
        return [
            {**place_codes.code_json(r.code, ctx.base_url), "place": place_codes.place_json(r.place)}
            for r in rows
            if can_see(who, ctx.jurisdiction, r.place.station_id)
        ]

    return {"items": await ctx.read(work)}


@router.post(
    "/api/v1/codes/{code}/deactivate", response_model=CodeOut, openapi_extra=json_body_doc(CodeChange, False)
)
async def deactivate_code(ctx: Ctx, who: Admin, code: str, request: Request) -> dict[str, Any]:
    """Take a code out of use; scanning it shows a clear 'deactivated' page (another street's: 404)."""
    body = await read_model(request, CodeChange, ctx.config.max_form_bytes, optional=True)
    note = body.note if body else None
    allowed = visible_stations(who, ctx.jurisdiction)
    return await ctx.write(
        lambda s: place_codes.code_json(place_codes.deactivate_code(s, code, note, allowed), ctx.base_url)
    )


@router.post(
    "/api/v1/codes/{code}/replace",
    status_code=201,
    response_model=CodeReplaced,
    openapi_extra=json_body_doc(CodeChange, False),
)
async def replace_code(ctx: Ctx, who: Admin, code: str, request: Request) -> dict[str, Any]:
    """Replace a damaged code: the old one points riders to the new one (another street's: 404)."""
    body = await read_model(request, CodeChange, ctx.config.max_form_bytes, optional=True)
    note = body.note if body else None
    allowed = visible_stations(who, ctx.jurisdiction)

    def work(session: Session) -> dict[str, Any]:
        old, new = place_codes.replace_code(session, code, note, allowed)
        return {
            "old": place_codes.code_json(old, ctx.base_url),
            "new": place_codes.code_json(new, ctx.base_url),
        }

    return await ctx.write(work)


@router.get(
    "/api/v1/codes/{code}.{fmt}",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}, "image/png": {}}, "description": "The QR image."}},
)
async def code_image(
    ctx: Ctx, code: str, fmt: str, scale: Annotated[int, Query(ge=1, le=40)] = 8
) -> Response:
    """The QR code of a report code as SVG or PNG, pointing at the rider page."""
    if fmt not in ("svg", "png"):
        raise ApiError(404, "not_found", "QR images are .svg or .png.")
    found = await ctx.read(lambda s: place_codes.lookup_code(s, code))
    if found.code is None or found.place is None:
        raise ApiError(404, "unknown_code", "No place has this report code.")
    if fmt == "svg":
        return Response(qr.qr_svg(ctx.base_url, found.code, scale), media_type="image/svg+xml")
    return Response(qr.qr_png(ctx.base_url, found.code, scale), media_type="image/png")


@router.get("/api/v1/stations/{station_id}/codes/sheet", response_class=HTMLResponse)
async def code_sheet(ctx: Ctx, who: Staff, station_id: str) -> HTMLResponse:
    """The printable A4 sheet of a station's active codes (open it and print)."""
    if station_id not in ctx.jurisdiction.stations or not can_see(who, ctx.jurisdiction, station_id):
        raise ApiError(404, "not_found", "No such station.")
    rows = await ctx.read(lambda s: place_codes.list_codes(s, station_id=station_id))
    return HTMLResponse(qr.render_sheet(rows, station_id, ctx.jurisdiction, ctx.base_url))
