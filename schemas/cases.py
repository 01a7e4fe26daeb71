"""The case contract every service shares: states, the open and final sets, priorities, staff roles."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class CaseStatus(StrEnum):
    """A case's state (docs/architecture.md, "Case lifecycle"); the values are what events and APIs carry."""

    NEW = "new"
    ACKNOWLEDGED = "acknowledged"
    DISPATCHED = "dispatched"
    RESOLVED = "resolved"
    CLOSED = "closed"
    RETURNED = "returned"
    ON_HOLD = "on_hold"
    REJECTED = "rejected"


FINAL_STATUSES: frozenset[CaseStatus] = frozenset({CaseStatus.CLOSED, CaseStatus.REJECTED})
"""States a case never leaves."""
OPEN_STATUSES: frozenset[CaseStatus] = frozenset(CaseStatus) - FINAL_STATUSES
"""Every other state: the case is still someone's work."""

Priority = Literal["normal", "high", "urgent"]
PRIORITIES: tuple[Priority, ...] = ("normal", "high", "urgent")
ClockMode = Literal["working", "calendar"]
"""How a case's SLA clock runs: working hours on working days, or around the clock (24 小时处置)."""
"""Priorities from lowest to highest: the one order every service ranks by."""


def priority_rank(priority: Priority) -> int:
    """0 for normal, rising with urgency."""
    return PRIORITIES.index(priority)


def raise_priority(priority: Priority, steps: int = 1) -> Priority:
    """The priority `steps` higher, capped at the highest."""
    return PRIORITIES[min(priority_rank(priority) + steps, len(PRIORITIES) - 1)]


def highest(*priorities: Priority) -> Priority:
    """The most urgent of the given priorities."""
    return max(priorities, key=priority_rank)


Role = Literal["staff", "supervisor", "admin", "city"]
ROLES: tuple[Role, ...] = ("staff", "supervisor", "admin", "city")
"""Staff roles: `staff` act on their own stations' cases, `supervisor` (the centre) on every station
of their streets, `admin` manages accounts, places and codes of their streets, `city` supervises
every street (a supervisor's actions, anywhere; no account management)."""
