"""SLA deadlines and colours (pure). Deadlines count from the report's submission."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from schemas.reference import Category

Colour = Literal["green", "yellow", "red"]
YELLOW_AT = 0.8


def deadlines(category: Category | None, priority: str, start: datetime) -> tuple[datetime, datetime]:
    """Sign-for and resolve deadlines for a case.

    Elapsed hours for now; the working-day calendar (holidays, make-up days, working hours) replaces
    this in the case-lifecycle work without changing the signature.
    """
    if category is None:
        return start + timedelta(hours=2), start + timedelta(hours=24)
    p = priority if priority in category.sla.ack_hours else "normal"
    return (
        start + timedelta(hours=category.sla.ack(p)),
        start + timedelta(hours=category.sla.resolve(p)),
    )


def colour(start: datetime, due: datetime | None, now: datetime) -> Colour:
    """Green before 80 % of the allowed time, yellow after, red past the deadline."""
    if due is None:
        return "green"
    if now >= due:
        return "red"
    total = (due - start).total_seconds()
    if total > 0 and (now - start).total_seconds() >= YELLOW_AT * total:
        return "yellow"
    return "green"
