"""The admin API for staff accounts (the `gridloop staff` command does the same from a shell)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlmodel import col, select

from gridloop.errors import ApiError
from gridloop.scope import account_streets
from gridloop.tokens import Principal
from schemas.cases import Role
from services.closer import throttle
from services.closer.context import Closer, Ctx, Who
from services.closer.models import Staff
from services.closer.staff import add_staff
from services.closer.staff import disable_staff as disable_account

router = APIRouter(tags=["staff"])


class StaffBody(BaseModel):
    """Create or update an account."""

    username: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,59}$")
    password: str = Field(min_length=8, max_length=200)
    role: Role
    stations: list[str] = Field(default_factory=list, max_length=20)
    display_name: str = Field("", max_length=80)
    streets: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="The streets a supervisor or admin belongs to (default: its stations' streets).",
    )


def _admin(who: Principal) -> None:
    if who.role != "admin":
        raise ApiError(403, "forbidden", "Only an admin manages accounts.")


def _mine(ctx: Closer, who: Principal, role: str, stations: list[str], streets: list[str]) -> bool:
    """An account an admin manages: one whose streets all lie in the admin's (never a city account)."""
    held, _ = account_streets(role, stations, streets, ctx.jurisdiction)
    return role != "city" and set(held) <= set(who.streets)


class StaffView(BaseModel):
    """An account without its password hash."""

    username: str
    display_name: str
    role: str
    stations: list[str]
    streets: list[str] = Field(description="The streets given explicitly (empty: its stations' streets).")
    active: bool
    token_version: int = Field(description="Raised by every revocation (disable, password, logout).")


class StaffList(BaseModel):
    """Every account."""

    staff: list[StaffView]


def staff_view(s: Staff) -> dict[str, Any]:
    """An account without its password hash."""
    return {
        "username": s.username,
        "display_name": s.display_name,
        "role": s.role,
        "stations": s.station_ids,
        "streets": s.street_ids,
        "active": s.active,
        "token_version": s.token_version,
    }


@router.get("/api/v1/staff", response_model=StaffList)
async def list_staff(ctx: Ctx, who: Who) -> dict[str, Any]:
    """Every account of the admin's streets."""
    _admin(who)

    def work() -> list[dict[str, Any]]:
        with ctx.runtime.db.session() as session:
            rows = session.exec(select(Staff).order_by(col(Staff.username)))
            return [staff_view(s) for s in rows if _mine(ctx, who, s.role, s.station_ids, s.street_ids)]

    return {"staff": await asyncio.to_thread(work)}


@router.post("/api/v1/staff", response_model=StaffView)
async def put_staff(ctx: Ctx, who: Who, body: StaffBody) -> dict[str, Any]:
    """Create an account, or reset an existing one's password, role and stations."""
    _admin(who)
    unknown = [s for s in body.stations if s not in ctx.jurisdiction.stations]
    if unknown:
        raise ApiError(422, "unknown_station", f"No such station: {', '.join(unknown)}.")
    strange = [s for s in body.streets if s not in ctx.jurisdiction.streets]
    if strange:
        known = ", ".join(ctx.jurisdiction.streets)
        raise ApiError(
            422,
            "unknown_street",
            f"No such street: {', '.join(strange)} (streets: {known}).",
            {"field": "streets"},
        )
    if body.role == "staff" and not body.stations:
        raise ApiError(422, "station_required", "Grid staff work for at least one station.")
    if body.role == "city":
        raise ApiError(403, "forbidden", "A city account is made with `gridloop staff add --role city`.")
    if not _mine(ctx, who, body.role, body.stations, body.streets):
        raise ApiError(403, "forbidden", "An admin manages the accounts of its own streets only.")

    def work() -> dict[str, Any]:
        with ctx.runtime.db.session(write=True) as session:
            old = session.exec(select(Staff).where(Staff.username == body.username)).first()
            if old is not None and not _mine(ctx, who, old.role, old.station_ids, old.street_ids):
                raise ApiError(404, "not_found", "No such account.")  # another street's: private
            return staff_view(
                add_staff(
                    session,
                    body.username,
                    body.password,
                    body.role,
                    body.stations,
                    body.display_name,
                    body.streets,
                )
            )

    view = await asyncio.to_thread(work)
    ctx.runtime.relay.wake()  # a reset account's staff.tokens_revoked goes out now
    return view


@router.post("/api/v1/staff/{username}/disable", response_model=StaffView)
async def disable_staff(ctx: Ctx, who: Who, username: str) -> dict[str, Any]:
    """Disable an account: its tokens stop working at once (here and in every other service)."""
    _admin(who)
    if username == who.username:
        raise ApiError(409, "conflict", "You cannot disable your own account.")

    def work() -> dict[str, Any]:
        with ctx.runtime.db.session(write=True) as session:
            staff = session.exec(select(Staff).where(Staff.username == username).with_for_update()).first()
            if staff is None or not _mine(ctx, who, staff.role, staff.station_ids, staff.street_ids):
                raise ApiError(404, "not_found", "No such account.")
            disable_account(session, staff)
            return staff_view(staff)

    view = await asyncio.to_thread(work)
    ctx.runtime.relay.wake()  # staff.tokens_revoked goes out now, not at the next poll
    return view


@router.post("/api/v1/staff/{username}/unlock", response_model=StaffView)
async def unlock_staff(ctx: Ctx, who: Who, username: str) -> dict[str, Any]:
    """Lift the sign-in wait of an account after failed sign-ins (its address waits stay)."""
    _admin(who)

    def work() -> dict[str, Any]:
        with ctx.runtime.db.session(write=True) as session:
            staff = session.exec(select(Staff).where(Staff.username == username)).first()
            if staff is None or not _mine(ctx, who, staff.role, staff.station_ids, staff.street_ids):
                raise ApiError(404, "not_found", "No such account.")
            throttle.release(session, throttle.account_key(username))
            return staff_view(staff)

    return await asyncio.to_thread(work)
