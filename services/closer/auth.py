"""Staff authentication: argon2 password hashes, expiring signed bearer tokens, role checks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gridloop.clock import utcnow
from gridloop.errors import ApiError

Role = Literal["staff", "supervisor", "admin"]
ROLES: tuple[Role, ...] = ("staff", "supervisor", "admin")
_hasher = PasswordHasher()
ALGORITHM = "HS256"


def hash_password(password: str) -> str:
    """An argon2id hash of a password."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when the password matches the hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class Principal:
    """Who is calling, from a verified token."""

    username: str
    role: Role
    stations: tuple[str, ...]
    token_id: str = ""

    def can_see_station(self, station_id: str) -> bool:
        """Supervisors and admins see every station; staff only their own."""
        return self.role in ("supervisor", "admin") or station_id in self.stations


def issue_token(username: str, role: Role, stations: list[str], secret: str, ttl_seconds: int) -> str:
    """A signed token that expires after ttl_seconds."""
    now = utcnow()
    claims = {
        "sub": username,
        "role": role,
        "stations": stations,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl_seconds)).timestamp()),
        "jti": uuid.uuid4().hex,
        "iss": "gridloop-closer",
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def read_token(token: str, secret: str) -> Principal:
    """Verify a token's signature and expiry (on the process clock); 401 otherwise."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer="gridloop-closer",
            # times are checked below against the injectable clock, not the library's wall clock
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "require": ["exp", "sub", "role"],
            },
        )
    except jwt.PyJWTError as exc:
        raise ApiError(
            401, "invalid_token", "The token is not valid.", headers={"WWW-Authenticate": "Bearer"}
        ) from exc
    # expiry is checked against the injectable clock, so tests can move time
    if int(claims["exp"]) <= int(utcnow().timestamp()):
        raise ApiError(401, "token_expired", "The token has expired.", headers={"WWW-Authenticate": "Bearer"})
    role = claims["role"]
    if role not in ROLES:
        raise ApiError(
            401, "invalid_token", "The token is not valid.", headers={"WWW-Authenticate": "Bearer"}
        )
    return Principal(claims["sub"], role, tuple(claims.get("stations") or ()), str(claims.get("jti") or ""))
