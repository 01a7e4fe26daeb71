"""Sign-in, sign-out and password change (the console signs in and out the same way).

Sign-in is throttled per account and per client address (`services.closer.throttle`); sign-out and a
password change revoke every token of the account (`staff.revoke`)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from gridloop.errors import ApiError
from gridloop.scope import account_streets
from services.closer.auth import issue_token
from services.closer.context import Closer, Ctx, Who, client_address
from services.closer.staff import SignedIn, change_password, check_password, sign_out

router = APIRouter(tags=["auth"])


class TokenAnswer(BaseModel):
    """A bearer token, how long it lasts, and who it is for."""

    access_token: str
    token_type: str
    expires_in: int
    role: str
    stations: list[str]
    streets: list[str] = Field(description="The streets the account sees (empty for `city`: all).")


class PasswordBody(BaseModel):
    """POST /api/v1/auth/password: the current password and the new one."""

    current_password: str = Field(max_length=200)
    new_password: str = Field(min_length=8, max_length=200)


class SignedOut(BaseModel):
    """Every token of the account is revoked (all its sessions end, not only this one)."""

    username: str
    token_version: int


async def login(ctx: Closer, request: Request, username: str, password: str) -> SignedIn:
    """Check a sign-in under the throttle: the account, or 401 `bad_credentials` / 429 (Retry-After)."""
    return await asyncio.to_thread(
        check_password, ctx.runtime.db, username[:60], password[:200], client_address(request)
    )


def new_token(ctx: Closer, who: SignedIn) -> str:
    """A token for a signed-in account, at its current token version, with its streets."""
    return issue_token(
        who.username,
        who.role,
        who.stations,
        ctx.secret,
        ctx.settings.token_ttl_seconds,
        who.version,
        ctx.signed_in_streets(who.username, who.role, who.stations, who.streets),
    )


def token_answer(ctx: Closer, who: SignedIn) -> TokenAnswer:
    """The answer carrying a new token."""
    return TokenAnswer(
        access_token=new_token(ctx, who),
        token_type="bearer",
        expires_in=ctx.settings.token_ttl_seconds,
        role=who.role,
        stations=who.stations,
        streets=list(account_streets(who.role, who.stations, who.streets, ctx.jurisdiction)[0]),
    )


_SIGN_IN_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "Wrong username or password (the same answer for an unknown account)."},
    429: {"description": "Too many failed sign-ins for this account or address: wait Retry-After seconds."},
}


@router.post("/api/v1/auth/token", responses=_SIGN_IN_ERRORS)
async def token(
    request: Request, ctx: Ctx, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> TokenAnswer:
    """Exchange a username and password for an expiring bearer token."""
    return token_answer(ctx, await login(ctx, request, form.username, form.password))


@router.post("/api/v1/auth/logout")
async def logout(ctx: Ctx, who: Who) -> SignedOut:
    """Sign out: every token of the account stops working (a new sign-in issues a new one)."""
    version = await asyncio.to_thread(sign_out, ctx.runtime.db, who.username, who.version)
    ctx.runtime.relay.wake()
    return SignedOut(username=who.username, token_version=version)


@router.post(
    "/api/v1/auth/password",
    responses={
        401: {"description": "No valid token (missing, expired or revoked)."},
        403: {"description": "The current password is wrong."},
        429: _SIGN_IN_ERRORS[429],
    },
)
async def password(request: Request, ctx: Ctx, who: Who, body: PasswordBody) -> TokenAnswer:
    """Change the caller's password: every earlier token is revoked; the answer is a new token."""
    if body.new_password == body.current_password:
        raise ApiError(
            422, "invalid_input", "new_password: choose a different password.", {"field": "new_password"}
        )
    try:
        signed = await asyncio.to_thread(
            change_password,
            ctx.runtime.db,
            who.username,
            body.current_password,
            body.new_password,
            client_address(request),
        )
    except ApiError as exc:
        if exc.status != 401:
            raise
        # the bearer token is fine: a wrong current password is not a sign-in failure of the request
        raise ApiError(403, "wrong_password", "The current password is wrong.") from exc
    ctx.runtime.relay.wake()
    return token_answer(ctx, signed)
