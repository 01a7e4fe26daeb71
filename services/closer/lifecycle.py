"""Applying the transition table to a stored case: stamps, SLA, timeline, the event through the outbox.

Everything here runs inside the caller's transaction; the caller commits. Effects that must only
happen after the commit (metrics) are returned as `Applied.after_commit`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from gridloop import metrics
from gridloop.clock import as_utc
from gridloop.outbox import add_event
from gridloop.topics import CASES_EVENTS
from schemas.events import CaseTransitioned, make_event
from schemas.reference import Jurisdiction
from services.closer import sla
from services.closer.models import PLUMBING, Case, CaseHold, CaseReport, Escalation, TimelineEntry
from services.closer.transitions import ACTIVE, Actor, Facts, Outcome, Request, decide

SERVICE = "closer"


@dataclass
class Applied:
    """The result of one transition: the case after it, and what to do once committed."""

    case: Case
    action: str
    event: str
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    def done(self) -> None:
        """Run the post-commit effects (metrics)."""
        for effect in self.after_commit:
            effect()


def facts(case: Case, jurisdiction: Jurisdiction) -> Facts:
    """What the transition table needs to know about a stored case."""
    category = jurisdiction.categories.get(case.category)
    return Facts(
        status=case.status,
        station_id=case.station_id,
        triage=case.triage,
        moves=case.moves,
        extensions_granted=case.extensions_granted,
        extension_pending=case.extension_pending_hours is not None,
        returned_from=case.returned_from,
        held_from=case.held_from,
        needs_after_photo=bool(category and category.needs_after_photo),
    )


def _same(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return a is b
    return as_utc(a) == as_utc(b)


def next_escalation(case: Case) -> datetime | None:
    """When the scheduler must look at this case next: the earliest deadline not escalated yet."""
    if case.status not in ACTIVE:
        return None
    candidates = []
    if case.status == "new" and case.ack_due is not None and not _same(case.ack_escalated_due, case.ack_due):
        candidates.append(as_utc(case.ack_due))
    if case.resolve_due is not None and not _same(case.resolve_escalated_due, case.resolve_due):
        candidates.append(as_utc(case.resolve_due))
    return min(candidates) if candidates else None


def due_deadlines(case: Case, now: datetime) -> list[tuple[sla.Deadline, datetime]]:
    """The deadlines of this case that are past and not escalated yet."""
    out: list[tuple[sla.Deadline, datetime]] = []
    if case.status not in ACTIVE:
        return out
    if (
        case.status == "new"
        and case.ack_due is not None
        and as_utc(case.ack_due) <= now
        and not _same(case.ack_escalated_due, case.ack_due)
    ):
        out.append(("ack", as_utc(case.ack_due)))
    if (
        case.resolve_due is not None
        and as_utc(case.resolve_due) <= now
        and not _same(case.resolve_escalated_due, case.resolve_due)
    ):
        out.append(("resolve", as_utc(case.resolve_due)))
    return out


class Lifecycle:
    """The closer's case lifecycle over its database: one place that changes a case's state."""

    def __init__(self, jurisdiction: Jurisdiction, calendar: sla.WorkCalendar, confirm_window_hours: float):
        self.j = jurisdiction
        self.calendar = calendar
        self.confirm_window = timedelta(hours=confirm_window_hours)
        # cases may move to grid stations and specialised units, never to the centre itself
        self.stations: Collection[str] = frozenset(
            s.id for s in jurisdiction.stations.values() if s.kind != "centre"
        )

    # ---- SLA ------------------------------------------------------------------------------------

    def set_budget(self, case: Case) -> None:
        """Fix the case's working-hour budgets from its category and priority."""
        b = sla.budget(self.j.categories.get(case.category), case.priority)
        case.ack_hours, case.resolve_hours = b.ack_hours, b.resolve_hours

    def refresh_sla(self, session: Session | None, case: Case) -> None:
        """Recompute deadlines, the active due time, the warning point and the next escalation.

        Without a session the case is new: it has no holds to read."""
        case.is_active = case.status in ACTIVE
        if case.status != "on_hold":
            holds = (
                session.exec(select(CaseHold).where(CaseHold.case_id == case.case_id)).all()
                if session is not None
                else []
            )
            plan = sla.plan(
                self.calendar,
                as_utc(case.submitted_at),
                case.ack_hours,
                case.resolve_hours,
                case.extension_hours,
                [(h.start, h.end) for h in holds],
            )
            case.ack_due, case.ack_warn = plan.ack_due, plan.ack_warn
            case.resolve_due, case.resolve_warn = plan.resolve_due, plan.resolve_warn
        if case.status == "new":
            case.due_at, case.warn_at = case.ack_due, case.ack_warn
        elif case.status in ACTIVE:
            case.due_at, case.warn_at = case.resolve_due, case.resolve_warn
        else:  # resolved, on hold (the clock stands still), final
            case.due_at = case.warn_at = None
        case.escalate_at = next_escalation(case)

    def record_breach(
        self, session: Session, case: Case, deadline: sla.Deadline, due: datetime, now: datetime, late: bool
    ) -> bool:
        """Write the once-per-deadline escalation row; False when it exists already."""
        try:
            with session.begin_nested():
                session.add(
                    Escalation(
                        case_id=case.case_id,
                        deadline=deadline,
                        due_at=due,
                        at=now,
                        station_id=case.station_id,
                        late=late,
                    )
                )
                session.flush()
        except IntegrityError:
            return False
        if deadline == "ack":
            case.ack_escalated_due = due
        else:
            case.resolve_escalated_due = due
        return True

    # ---- transitions ----------------------------------------------------------------------------

    def transition(
        self,
        session: Session,
        case: Case,
        who: Actor,
        actor_name: str,
        req: Request,
        now: datetime,
        photo_ids: list[str] | None = None,
        deadline: sla.Deadline | None = None,
    ) -> Applied:
        """Take one action on a case (raises transitions.Refused when the table says no)."""
        outcome = decide(facts(case, self.j), who, req, self.stations)
        action = outcome.rule.action
        prev_station = case.station_id
        effects: list[Callable[[], None]] = []
        self._apply_effects(session, case, outcome, req, now, photo_ids or [], effects)
        case.status = outcome.status
        if outcome.rule.stamp:
            setattr(case, outcome.rule.stamp, now)
        case.version += 1
        case.updated_at = now
        self.refresh_sla(session, case)
        session.add(case)
        reason = req.reason if action in ("return", "reject") else deadline
        note = (req.note or "").strip() or None
        session.add(
            TimelineEntry(
                case_id=case.case_id,
                at=now,
                action=action,
                status=case.status,
                actor=actor_name,
                note=note,
                station_id=case.station_id,
                prev_station_id=prev_station if prev_station != case.station_id else None,
                reason=reason,
                version=case.version,
            )
        )
        extension = None
        if action == "request_extension":
            extension = req.hours
        elif action == "approve_extension":
            extension = case.extension_hours
        self._emit(
            session,
            case,
            outcome.event,
            action,
            now,
            note=note,
            reason=reason,
            assignee=case.assignee if action == "dispatch" else None,
            from_station=prev_station if action in ("transfer", "triage", "reassign", "send_back") else None,
            deadline=deadline,
            extension_hours=extension,
        )
        effects.append(lambda: metrics.case_transitions.labels(action).inc())
        return Applied(case, action, outcome.event, effects)

    def _apply_effects(
        self,
        session: Session,
        case: Case,
        outcome: Outcome,
        req: Request,
        now: datetime,
        photo_ids: list[str],
        effects: list[Callable[[], None]],
    ) -> None:
        action = outcome.rule.action
        category = case.category
        submitted = as_utc(case.submitted_at)
        if action == "acknowledge":
            self._late(session, case, "ack", now, effects)
            seconds = max((now - submitted).total_seconds(), 0.0)
            effects.append(lambda: metrics.case_ack_seconds.labels(category).observe(seconds))
        elif action == "dispatch":
            case.assignee = (req.assignee or "").strip()[:60]
        elif action == "resolve":
            self._late(session, case, "resolve", now, effects)
            case.confirm_due = now + self.confirm_window
            case.extension_pending_hours = None
            if photo_ids:
                case.after_photo_ids = ",".join([*filter(None, case.after_photo_ids.split(",")), *photo_ids])
            seconds = max((now - submitted).total_seconds(), 0.0)
            effects.append(lambda: metrics.case_resolve_seconds.labels(category).observe(seconds))
        elif action == "return":
            case.returned_from = case.status
            case.return_reason = req.reason
            case.moves += 1
        elif action == "transfer":
            case.station_id = req.to_station or case.station_id
            case.moves += 1
            case.assignee = None
        elif action == "triage":
            case.station_id = req.to_station or case.station_id
            case.triage = False
        elif action == "reassign":
            case.station_id = req.to_station or case.station_id
            case.returned_from = None
            case.assignee = None
        elif action == "send_back":
            case.returned_from = None
        elif action == "request_extension":
            case.extension_pending_hours = req.hours
        elif action == "approve_extension":
            case.extension_hours += case.extension_pending_hours or 0.0
            case.extensions_granted += 1
            case.extension_pending_hours = None
        elif action == "deny_extension":
            case.extension_pending_hours = None
        elif action == "hold":
            case.held_from = case.status
            session.add(CaseHold(case_id=case.case_id, start=now))
        elif action == "release":
            for hold in session.exec(
                select(CaseHold).where(CaseHold.case_id == case.case_id, col(CaseHold.end).is_(None))
            ):
                hold.end = now
                session.add(hold)
            session.flush()
            case.held_from = None
        elif action == "reject":
            case.reject_reason = req.reason
        elif action in ("confirm", "auto_close"):
            case.confirm_due = None
        elif action == "reopen":
            case.confirm_due = None
            case.reopen_count += 1
        elif action == "escalate":
            case.supervised = True

    def _late(
        self,
        session: Session,
        case: Case,
        deadline: sla.Deadline,
        now: datetime,
        effects: list[Callable[[], None]],
    ) -> None:
        """A milestone reached after its deadline is a breach, counted once even if never escalated."""
        due = case.ack_due if deadline == "ack" else case.resolve_due
        if due is None or now <= as_utc(due):
            return
        station = case.station_id
        if self.record_breach(session, case, deadline, as_utc(due), now, late=True):
            effects.append(lambda: metrics.sla_breaches.labels(station, deadline).inc())

    def _emit(
        self,
        session: Session,
        case: Case,
        event_name: str,
        action: str,
        now: datetime,
        **extra: Any,
    ) -> None:
        report_ids = list(
            session.exec(
                select(CaseReport.report_id)
                .where(CaseReport.case_id == case.case_id)
                .order_by(col(CaseReport.submitted_at))
            )
        )
        data = CaseTransitioned(
            case_id=case.case_id,
            action=action,
            status=case.status,
            station_id=case.station_id,
            version=case.version,
            at=now,
            report_ids=report_ids,
            after_photo_ids=[p for p in case.after_photo_ids.split(",") if p],
            ack_due=case.ack_due,
            resolve_due=case.resolve_due,
            **extra,
        )
        event = make_event(event_name, data, source=SERVICE, subject=case.case_id, time=now)
        add_event(session, PLUMBING, CASES_EVENTS, case.case_id, event)

    # ---- escalation -----------------------------------------------------------------------------

    def escalate_due(self, session: Session, case: Case, now: datetime) -> list[Applied]:
        """Escalate every past, not yet escalated deadline of a case (once per deadline and due time)."""
        applied: list[Applied] = []
        for deadline, due in due_deadlines(case, now):
            if not self.record_breach(session, case, deadline, due, now, late=False):
                continue
            station: str = case.station_id
            result = self.transition(
                session,
                case,
                "system",
                "scheduler",
                Request("escalate", note=f"{deadline} deadline {due.isoformat()} missed"),
                now,
                deadline=deadline,
            )
            result.after_commit.append(_breach_counter(station, deadline))
            applied.append(result)
        if not applied:
            case.escalate_at = next_escalation(case)
            session.add(case)
        return applied


def _breach_counter(station: str, deadline: str) -> Callable[[], None]:
    """A post-commit effect counting one missed deadline."""
    return lambda: metrics.sla_breaches.labels(station, deadline).inc()
