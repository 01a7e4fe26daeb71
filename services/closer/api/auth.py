"""Sign-in: a username and password for an expiring bearer token (the console signs in the same way)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from gridloop.errors import ApiError
from services.closer.auth import issue_token
from services.closer.context import Closer, Ctx
from services.closer.staff import check_login

router = APIRouter(tags=["auth"])


class TokenAnswer(BaseModel):
    """A bearer token, how long it lasts, and who it is for."""

    access_token: str
    token_type: str
    expires_in: int
    role: str
    stations: list[str]


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


@router.post("/api/v1/auth/token")
async def token(ctx: Ctx, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> TokenAnswer:
    """Exchange a username and password for an expiring bearer token."""
    name, role, stations = await login(ctx, form.username, form.password)
    ttl = ctx.settings.token_ttl_seconds
    return TokenAnswer(
        access_token=issue_token(name, role, stations, ctx.secret, ttl),  # type: ignore[arg-type]
        token_type="bearer",
        expires_in=ttl,
        role=role,
        stations=stations,
    )
