"""Staff credentials: argon2 password hashes and the signed bearer tokens the closer issues.

Every service (the closer included) verifies tokens with `gridloop.tokens`.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gridloop.clock import utcnow
from gridloop.tokens import ALGORITHM, ISSUER
from schemas.cases import Role

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash of a password."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when the password matches the hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def issue_token(
    username: str,
    role: Role,
    stations: list[str],
    secret: str,
    ttl_seconds: int,
    version: int,
    streets: list[str] | None = None,
) -> str:
    """A signed token that expires after ttl_seconds, carrying the account's token version (`ver`):
    raising the version revokes it; and its streets (gridloop.scope.account_streets)."""
    now = utcnow()
    claims = {
        "sub": username,
        "role": role,
        "stations": stations,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl_seconds)).timestamp()),
        "jti": uuid.uuid4().hex,
        "iss": ISSUER,
        "ver": version,
        "streets": streets or [],
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
