"""Staff bearer tokens: the one verifier every service uses (the closer hashes passwords and issues)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jwt

from gridloop.clock import utcnow
from gridloop.errors import ApiError
from schemas.cases import ROLES, Role

ALGORITHM = "HS256"
ISSUER = "gridloop-closer"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class Principal:
    """Who is calling, from a verified token."""

    username: str
    role: Role
    stations: tuple[str, ...]
    token_id: str = ""
    version: int = 0
    """The account's token version when the token was issued (claim `ver`); revocation raises it."""
    streets: tuple[str, ...] = ()
    """The streets the account belongs to (claim `streets`): what a supervisor or admin sees
    (gridloop/scope.py decides, from these and the stations)."""


TokenCheck = Callable[[Principal], bool]
"""A service's answer to "is this verified token still current?" (the account active, its token
version not raised since): the closer asks its staff table, other services their copy of
`staff.events`."""


def read_token(token: str, secret: str, current: TokenCheck | None = None) -> Principal:
    """Verify a token's signature, expiry (on the process clock) and, given `current`, that it was
    not revoked; 401 otherwise."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            # times are checked below against the injectable clock, not the library's wall clock
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "require": ["exp", "sub", "role"],
            },
        )
    except jwt.PyJWTError as exc:
        raise ApiError(401, "invalid_token", "The token is not valid.", headers=_CHALLENGE) from exc
    # expiry is checked against the injectable clock, so tests can move time
    if int(claims["exp"]) <= int(utcnow().timestamp()):
        raise ApiError(401, "token_expired", "The token has expired.", headers=_CHALLENGE)
    role = claims["role"]
    if role not in ROLES:
        raise ApiError(401, "invalid_token", "The token is not valid.", headers=_CHALLENGE)
    principal = Principal(
        claims["sub"],
        role,
        tuple(claims.get("stations") or ()),
        str(claims.get("jti") or ""),
        int(claims.get("ver") or 0),
        tuple(claims.get("streets") or ()),
    )
    if current is not None and not current(principal):
        raise ApiError(401, "token_revoked", "The token was revoked; sign in again.", headers=_CHALLENGE)
    return principal


def bearer_principal(authorization: str | None, secret: str, current: TokenCheck | None = None) -> Principal:
    """The caller of an `Authorization: Bearer …` header; 401 when it is missing or bad."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "Sign in first.", headers=_CHALLENGE)
    return read_token(token.strip(), secret, current)


def require_role(principal: Principal, *roles: Role) -> Principal:
    """The principal when it has one of the roles; 403 otherwise."""
    if principal.role not in roles:
        raise ApiError(403, "forbidden", f"This needs the role {' or '.join(roles)}.")
    return principal
