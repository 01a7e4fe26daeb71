"""Which stations an account sees: the closer's name for the one rule (gridloop/scope.py, which the
reporter uses too); every staff-facing query and 404 check goes through it."""

from __future__ import annotations

from gridloop.scope import (
    OVERSEERS,
    Scope,
    account_streets,
    can_see,
    narrow,
    oversees,
    visible_stations,
    visible_streets,
)

__all__ = [
    "OVERSEERS",
    "Scope",
    "account_streets",
    "can_see",
    "narrow",
    "oversees",
    "visible_stations",
    "visible_streets",
]
