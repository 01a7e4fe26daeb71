"""The case lifecycle as one table (pure): which role may take which action from which state.

States (schemas.cases.CaseStatus, docs/architecture.md): new → acknowledged → dispatched →
resolved → closed; side states returned, on_hold, rejected. `reopen` puts a resolved case back to
dispatched. Actions by `system` come from the scheduler (escalate, auto_close) and from rider
feedback (confirm, reopen), never from HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Literal

from schemas.cases import ROLES, CaseStatus, Role

S = CaseStatus
Actor = Role | Literal["system"]
ACTORS: tuple[Actor, ...] = (*ROLES, "system")

STATES: tuple[CaseStatus, ...] = tuple(CaseStatus)
"""Every state, in lifecycle order (filters, console tabs)."""
ACTIVE: tuple[CaseStatus, ...] = (S.NEW, S.ACKNOWLEDGED, S.DISPATCHED, S.RETURNED)
"""States whose SLA clock runs: they have a due time and sit in the default queue."""
OPEN: tuple[CaseStatus, ...] = (*ACTIVE, S.RESOLVED, S.ON_HOLD)
"""schemas.cases.OPEN_STATUSES in the order the queue counts and the console show them."""

MAX_EXTENSIONS = 2
MAX_MOVES = 2
"""After this many returns or transfers only a supervisor moves a case on (no ping-pong)."""

RETURN_REASONS: dict[str, tuple[str, str]] = {
    "wrong_area": ("属地不符", "Not our area"),
    "unclear_ownership": ("权属不清", "Ownership unclear"),
    "overlapping_duties": ("职能交叉", "Overlapping duties"),
    "other": ("其他", "Other"),
}
REJECT_REASONS: dict[str, tuple[str, str]] = {
    "invalid": ("无效", "Invalid"),
    "duplicate": ("重复", "Duplicate"),
}
MAX_EXTENSION_HOURS = 400.0


@dataclass(frozen=True)
class Facts:
    """What the table needs to know about a case."""

    status: str
    station_id: str
    triage: bool = False
    moves: int = 0
    extensions_granted: int = 0
    extension_pending: bool = False
    returned_from: str | None = None
    held_from: str | None = None
    needs_after_photo: bool = False


@dataclass(frozen=True)
class Request:
    """An action with its inputs, as a client sent it."""

    action: str
    note: str | None = None
    assignee: str | None = None
    to_station: str | None = None
    reason: str | None = None
    hours: float | None = None
    has_photo: bool = False
    topic_id: str | None = None
    """Set when closing a topic (议题) resolves the case: the meeting's recorded outcome stands in for
    the after-photo (the fix was the body's, decided and recorded on the topic)."""


Guard = Callable[[Facts, Actor], str | None]
"""Returns why the action is not possible now, or None."""
Check = Callable[[Facts, Request, Collection[str]], tuple[str, str] | None]
"""Returns (field, problem) for a bad input, or None."""


@dataclass(frozen=True)
class Rule:
    """One action: from which states, by whom, to which state, which event, which milestone."""

    action: str
    sources: tuple[CaseStatus, ...]
    target: CaseStatus | Literal["returned_from", "held_from"] | None
    """None: unchanged; "returned_from"/"held_from": back to the state before."""
    actors: tuple[Actor, ...]
    event: str
    stamp: str | None = None
    guards: tuple[Guard, ...] = field(default_factory=tuple)
    checks: tuple[Check, ...] = field(default_factory=tuple)


# ---- guards (facts only) and checks (inputs) ---------------------------------------------------


def _not_triage(f: Facts, _who: Actor) -> str | None:
    return "the case waits for the centre's triage" if f.triage else None


def _is_triage(f: Facts, _who: Actor) -> str | None:
    return None if f.triage else "the case is not in triage"


def _moves_left(f: Facts, who: Actor) -> str | None:
    if who == "staff" and f.moves >= MAX_MOVES:
        return f"moved {f.moves} times already: only a supervisor can move it on"
    return None


def _extension_possible(f: Facts, _who: Actor) -> str | None:
    if f.extension_pending:
        return "an extension request is already pending"
    if f.extensions_granted >= MAX_EXTENSIONS:
        return f"{MAX_EXTENSIONS} extensions granted already"
    return None


def _extension_pending(f: Facts, _who: Actor) -> str | None:
    return None if f.extension_pending else "no extension request is pending"


def _need_note(_f: Facts, r: Request, _s: Collection[str]) -> tuple[str, str] | None:
    return None if r.note and r.note.strip() else ("note", "a note is required")


def _need_assignee(_f: Facts, r: Request, _s: Collection[str]) -> tuple[str, str] | None:
    return None if r.assignee and r.assignee.strip() else ("assignee", "name who handles it")


def _need_photo(f: Facts, r: Request, _s: Collection[str]) -> tuple[str, str] | None:
    if f.needs_after_photo and not r.has_photo and not r.topic_id:
        return ("photo", "this category needs an after-photo")
    return None


def _need_station(f: Facts, r: Request, stations: Collection[str]) -> tuple[str, str] | None:
    if not r.to_station:
        return ("to_station", "name the station")
    if r.to_station not in stations:
        return ("to_station", f"{r.to_station} is not a grid station")
    if r.to_station == f.station_id:
        return ("to_station", "the case is at that station already")
    return None


def _return_reason(_f: Facts, r: Request, _s: Collection[str]) -> tuple[str, str] | None:
    if r.reason not in RETURN_REASONS:
        return ("reason", f"one of {', '.join(RETURN_REASONS)}")
    if r.reason == "other" and not (r.note and r.note.strip()):
        return ("note", "say why (reason: other)")
    return None


def _reject_reason(_f: Facts, r: Request, _s: Collection[str]) -> tuple[str, str] | None:
    return None if r.reason in REJECT_REASONS else ("reason", f"one of {', '.join(REJECT_REASONS)}")


def _hours(_f: Facts, r: Request, _s: Collection[str]) -> tuple[str, str] | None:
    if r.hours is None or not 0 < r.hours <= MAX_EXTENSION_HOURS:
        return ("hours", f"working hours between 0 and {MAX_EXTENSION_HOURS:g}")
    return None


# ---- the table ---------------------------------------------------------------------------------

_STAFF: tuple[Actor, ...] = ("staff", "supervisor")
_SUP: tuple[Actor, ...] = ("supervisor",)
_SYS: tuple[Actor, ...] = ("system",)

TABLE: dict[str, Rule] = {
    r.action: r
    for r in (
        Rule("acknowledge", (S.NEW,), S.ACKNOWLEDGED, _STAFF, "case.acknowledged", "acknowledged_at",
             (_not_triage,)),
        Rule("dispatch", (S.ACKNOWLEDGED,), S.DISPATCHED, _STAFF, "case.dispatched", "dispatched_at",
             checks=(_need_assignee,)),
        Rule("resolve", (S.DISPATCHED,), S.RESOLVED, _STAFF, "case.resolved", "resolved_at",
             checks=(_need_note, _need_photo)),
        Rule("return", (S.NEW, S.ACKNOWLEDGED), S.RETURNED, ("staff",), "case.returned", "returned_at",
             (_not_triage, _moves_left), (_return_reason,)),
        Rule("transfer", (S.NEW, S.ACKNOWLEDGED), S.NEW, _STAFF, "case.transferred", None,
             (_not_triage, _moves_left), (_need_station,)),
        Rule("request_extension", (S.ACKNOWLEDGED, S.DISPATCHED), None, ("staff",),
             "case.extension_requested", None, (_extension_possible,), (_hours, _need_note)),
        Rule("approve_extension", (S.ACKNOWLEDGED, S.DISPATCHED, S.RETURNED, S.ON_HOLD), None, _SUP,
             "case.extension_decided", None, (_extension_pending,)),
        Rule("deny_extension", (S.ACKNOWLEDGED, S.DISPATCHED, S.RETURNED, S.ON_HOLD), None, _SUP,
             "case.extension_decided", None, (_extension_pending,), (_need_note,)),
        Rule("triage", (S.NEW,), S.NEW, _SUP, "case.transferred", None, (_is_triage,), (_need_station,)),
        Rule("reassign", (S.RETURNED,), S.NEW, _SUP, "case.transferred", None, checks=(_need_station,)),
        Rule("send_back", (S.RETURNED,), "returned_from", _SUP, "case.transferred", None,
             checks=(_need_note,)),
        Rule("hold", ACTIVE, S.ON_HOLD, _SUP, "case.on_hold", "held_at", checks=(_need_note,)),
        Rule("release", (S.ON_HOLD,), "held_from", _SUP, "case.released", None),
        Rule("reject", (*ACTIVE, S.ON_HOLD), S.REJECTED, _SUP, "case.rejected", "rejected_at",
             checks=(_reject_reason,)),
        Rule("escalate", ACTIVE, None, _SYS, "case.escalated", "escalated_at"),
        Rule("confirm", (S.RESOLVED,), S.CLOSED, _SYS, "case.closed", "closed_at"),
        Rule("auto_close", (S.RESOLVED,), S.CLOSED, _SYS, "case.closed", "closed_at"),
        Rule("reopen", (S.RESOLVED,), S.DISPATCHED, _SYS, "case.reopened", "reopened_at",
             checks=(_need_note,)),
    )
}  # fmt: skip
ACTIONS = tuple(TABLE)


class Refused(Exception):
    """An action that cannot be taken: HTTP status, stable code, message, the allowed actions."""

    def __init__(
        self, status: int, code: str, message: str, allowed: list[str], field: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.allowed = allowed
        self.field = field


@dataclass(frozen=True)
class Outcome:
    """What an allowed action does: the rule, and the state after it."""

    rule: Rule
    status: str

    @property
    def event(self) -> str:
        """The event name to emit."""
        return self.rule.event


def _blocked(rule: Rule, facts: Facts, who: Actor) -> str | None:
    if facts.status not in rule.sources:
        return f"not from state {facts.status}"
    for guard in rule.guards:
        why = guard(facts, who)
        if why:
            return why
    return None


def allowed_actions(facts: Facts, who: Actor) -> list[str]:
    """The actions this actor may take on a case in this state, in table order."""
    return [a for a, r in TABLE.items() if who in r.actors and _blocked(r, facts, who) is None]


def decide(facts: Facts, who: Actor, req: Request, stations: Collection[str] = ()) -> Outcome:
    """Check an action against the table and its inputs; raises Refused, else the outcome."""
    allowed = allowed_actions(facts, who)
    rule = TABLE.get(req.action)
    if rule is None:
        raise Refused(422, "unknown_action", f"Unknown action {req.action!r}.", allowed, "action")
    if who not in rule.actors:
        raise Refused(403, "action_forbidden", f"A {who} cannot {req.action}.", allowed)
    why = _blocked(rule, facts, who)
    if why is not None:
        names = ", ".join(allowed) or "none"
        raise Refused(
            409,
            "transition_not_allowed",
            f"Cannot {req.action} a case in state {facts.status} ({why}). Allowed: {names}.",
            allowed,
        )
    for check in rule.checks:
        bad = check(facts, req, stations)
        if bad is not None:
            raise Refused(422, "invalid_input", f"{bad[0]}: {bad[1]}.", allowed, bad[0])
    if rule.target is None:
        status = facts.status
    elif rule.target in ("returned_from", "held_from"):
        status = getattr(facts, rule.target) or S.NEW
    else:
        status = rule.target
    return Outcome(rule, status)
