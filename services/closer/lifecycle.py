"""Every change to a case, in one place: opening it, merging a report, a staff or scheduler
transition, the rider's feedback, the conversation (notes, public updates, questions, replies, nudges).

Each change writes the same three things the same way: the case row with its version bumped, one
timeline row and (except for kept late feedback) one event on `cases.events` through the outbox,
all by `_record`. Everything runs inside the caller's transaction; the caller commits. Effects that
must wait for the commit (metrics) go through `gridloop.rawsql.after_commit`, which runs them once
the consumer batch or the session committed, so a batch applied twice counts once.

Opening and merging are the measured hot path: plain SQL, one `UPDATE ... RETURNING` for a merge,
no ORM objects in a session. Staff, scheduler and feedback changes use the ORM.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from gridloop import metrics
from gridloop.clock import as_utc, utcnow
from gridloop.outbox import add_raw
from gridloop.rawsql import Raw, after_commit, insert_model, insert_row, statement, table_of
from gridloop.topics import CASES_EVENTS
from schemas.cases import CaseStatus, ClockMode, priority_rank
from schemas.envelope import CloudEvent
from schemas.events import (
    CaseCommented,
    CaseNudged,
    CaseOpened,
    CaseQuestionAsked,
    CaseReportMerged,
    CaseRiderReplied,
    CaseRidersThanked,
    CaseTransitioned,
    CaseUpdatedPublic,
    EventData,
    ReportFeedback,
    ReportRouted,
    make_event,
)
from schemas.reference import Jurisdiction
from services.closer import conversation, duty, dutystore, sla
from services.closer.models import (
    PLUMBING,
    Case,
    CaseHold,
    CaseMessage,
    CaseReport,
    CaseThanks,
    Escalation,
    TimelineEntry,
)
from services.closer.transitions import ACTIVE, Actor, Facts, Outcome, Request, decide

SERVICE = "closer"
log = logging.getLogger(__name__)


class UnknownCase(LookupError):
    """Feedback for a case this closer does not have (it goes to the dead letters)."""


@dataclass
class Applied:
    """The result of one transition: the case after it, the action taken and the event sent."""

    case: Case
    action: str
    event: str


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
    if (
        case.status == CaseStatus.NEW
        and case.ack_due is not None
        and not _same(case.ack_escalated_due, case.ack_due)
    ):
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
        case.status == CaseStatus.NEW
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

    def __init__(
        self, jurisdiction: Jurisdiction, calendars: sla.StreetCalendars, confirm_window_hours: float
    ) -> None:
        self.j = jurisdiction
        self.calendars = calendars
        self.confirm_window = timedelta(hours=confirm_window_hours)
        # cases may move to grid stations and specialised units, never to the centre itself
        self.stations: Collection[str] = frozenset(
            s.id for s in jurisdiction.stations.values() if s.kind != "centre"
        )

    # ---- SLA ------------------------------------------------------------------------------------

    def set_budget(self, case: Case) -> None:
        """Fix the case's budgets and their clock from its category, priority and "danger now" flag."""
        b = sla.budget(self.j.categories.get(case.category), case.priority, case.danger_now)
        case.ack_hours, case.resolve_hours, case.clock = b.ack_hours, b.resolve_hours, b.clock

    def refresh_sla(
        self, session: Session | None, case: Case, calendars: sla.StreetCalendars | None = None
    ) -> None:
        """Recompute deadlines, the active due time, the warning point and the next escalation.

        Without a session the case is new: it has no holds to read. `calendars` are the streets'
        on a changed day calendar being installed (`replan`); by default the lifecycle's own."""
        case.is_active = case.status in ACTIVE
        if case.status != CaseStatus.ON_HOLD:
            holds = (
                session.exec(select(CaseHold).where(CaseHold.case_id == case.case_id)).all()
                if session is not None
                else []
            )
            plan = sla.plan(
                (calendars or self.calendars).of(case.street_id),
                as_utc(case.submitted_at),
                case.ack_hours,
                case.resolve_hours,
                case.extension_hours,
                [(h.start, h.end) for h in holds],
                clock_of(case),
            )
            case.ack_due, case.ack_warn = plan.ack_due, plan.ack_warn
            case.resolve_due, case.resolve_warn = plan.resolve_due, plan.resolve_warn
        if case.status == CaseStatus.NEW:
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

    # ---- the one way a change is written --------------------------------------------------------

    @staticmethod
    def _bump(case: Case, now: datetime) -> None:
        """A new version of an ORM-loaded case (the plain-SQL merge bumps in its UPDATE)."""
        case.version += 1
        case.updated_at = now

    @staticmethod
    def _record(
        session: Session,
        raw: Raw | None,
        case_id: str,
        version: int,
        at: datetime,
        action: str,
        status: str,
        station_id: str,
        event: CloudEvent | None,
        *,
        actor: str = "system",
        note: str | None = None,
        prev_station_id: str | None = None,
        reason: str | None = None,
    ) -> str | None:
        """The timeline row of a change and its event through the outbox; returns the event's JSON.

        `raw` is the hot path's cursor when it has one (one fewer to open)."""
        insert_row(
            raw or Raw(session),
            table_of(TimelineEntry),
            {
                "case_id": case_id,
                "at": at,
                "action": action,
                "status": status,
                "actor": actor,
                "note": note,
                "station_id": station_id,
                "prev_station_id": prev_station_id,
                "reason": reason,
                "version": version,
            },
        )
        if event is None:
            return None
        envelope = event.model_dump_json()
        add_raw(session, PLUMBING, CASES_EVENTS, case_id, event.id, envelope)
        return envelope

    # ---- reports from the router (the hot path: plain SQL) -------------------------------------

    def take_report(self, session: Session, d: ReportRouted, now: datetime) -> None:
        """Open the case of a routed report or add the report to it; tell the reporter on `cases.events`."""
        raw = Raw(session)
        # one round trip: is the report known already (a redelivery), and the case's priority if any
        seen, priority = raw.first(_SEEN, {"report": d.report_id, "case": d.case_id}) or (None, None)
        if seen:
            self.replay_report(session, d.report_id)
            return
        if priority is None:
            # a merge that arrives for a case we never saw (redelivery order) opens it just the same
            event = self._open(session, raw, d, now)
        elif priority_rank(d.priority) > priority_rank(priority):
            event = self._merge_raising_priority(session, d, now)
        else:
            event = self._merge(session, raw, d, now)
        insert_row(
            raw,
            table_of(CaseReport),
            {
                "report_id": d.report_id,
                "case_id": d.case_id,
                "rider_ref": d.rider_ref,
                "submitted_at": d.submitted_at,
                "event_id": event[0],
                "envelope": event[1],
                "description": d.description,
                "photo_ids": ",".join(d.photo_ids)[:400],
                "platform": d.platform,
            },
        )
        submitted = as_utc(d.submitted_at)
        # measured when the transaction has committed: that is when the case shows in the queue
        after_commit(
            session,
            lambda: metrics.report_to_queue.observe(max((utcnow() - submitted).total_seconds(), 0.0)),
        )

    def replay_report(self, session: Session, report_id: str) -> None:
        """A decision seen before: send the reporter the same answer again (it dedupes by id)."""
        row = Raw(session).first(_REPLAY, {"id": report_id})
        if row is not None:
            case_id, event_id, envelope = row
            add_raw(session, PLUMBING, CASES_EVENTS, case_id, event_id, envelope)

    def _open(self, session: Session, raw: Raw, d: ReportRouted, now: datetime) -> tuple[str, str]:
        """A new case (立案, or the centre's triage queue) from the report that opened it."""
        case = Case(
            case_id=d.case_id,
            station_id=d.station_id,
            category=d.category,
            status=CaseStatus.NEW,
            priority=d.priority,
            triage=d.decision == "triage",
            version=1,
            grid_id=d.grid_id,
            street_id=d.street_id,
            place_id=d.place_id,
            place_name=d.place_name,
            lat=d.location.lat if d.location else None,
            lon=d.location.lon if d.location else None,
            description=d.description,
            danger_now=d.danger_now,
            route_reason=d.reason,
            submitted_at=d.submitted_at,
            opened_at=now,
            updated_at=now,
            distinct_riders=d.distinct_riders,
            report_count=1,
            common_issue=d.common_issue,
        )  # not in a session: a plain object to compute the SLA on, then one INSERT
        self.set_budget(case)
        self.refresh_sla(None, case)
        on = self._duty(session, case, now)
        if on is not None:  # the on-duty step is the case's version 2, written right after the opening
            case.duty_station_id, case.duty_username, case.version = on.station_id, on.username, 2
        insert_model(raw, case)
        opened = CaseOpened(
            case_id=case.case_id,
            report_id=d.report_id,
            station_id=case.station_id,
            category=case.category,
            status=case.status,
            priority=d.priority,
            triage=case.triage,
            version=1,
            opened_at=now,
            ack_due=case.ack_due,
            resolve_due=case.resolve_due,
            clock=clock_of(case),
            street_id=case.street_id,
            grid_id=case.grid_id,
            place_name=case.place_name,
        )
        event = make_event("case.opened", opened, source=SERVICE, subject=case.case_id, time=now)
        action = "triage" if case.triage else "opened"
        envelope = self._record(
            session, raw, case.case_id, 1, now, action, case.status, case.station_id, event, note=d.reason
        )
        if on is not None:
            self._record_duty(session, raw, case, on, now, "新案", [d.report_id])
        return event.id, envelope or ""

    def _merge(self, session: Session, raw: Raw, d: ReportRouted, now: datetime) -> tuple[str, str]:
        """One more report on a case: one atomic update (staff may be changing the case meanwhile)."""
        row = raw.first(
            _MERGE,
            {"id": d.case_id, "riders": d.distinct_riders, "common": d.common_issue, "now": raw.ts(now)},
        )
        assert row is not None
        station_id, status, version, riders, common, clock = row
        return self._merged(
            session, raw, d, now, station_id, status, version, riders, bool(common), _clock(clock)
        )

    def _merge_raising_priority(self, session: Session, d: ReportRouted, now: datetime) -> tuple[str, str]:
        """One more report that raises the case's priority (a common issue, a danger): the deadlines
        tighten, so the case is recomputed whole, under a row lock."""
        case = session.exec(select(Case).where(Case.case_id == d.case_id).with_for_update()).one()
        case.report_count += 1
        case.distinct_riders = max(case.distinct_riders, d.distinct_riders)
        case.common_issue = case.common_issue or d.common_issue
        case.danger_now = case.danger_now or d.danger_now  # it may choose calendar time (sla.clock_for)
        case.priority = d.priority
        self.set_budget(case)
        self.refresh_sla(session, case)
        self._bump(case, now)
        session.add(case)
        session.flush()
        session.expunge(case)  # the next event may change this row in plain SQL
        return self._merged(
            session,
            None,
            d,
            now,
            case.station_id,
            case.status,
            case.version,
            case.distinct_riders,
            case.common_issue,
            clock_of(case),
        )

    def _merged(
        self,
        session: Session,
        raw: Raw | None,
        d: ReportRouted,
        now: datetime,
        station_id: str,
        status: str,
        version: int,
        riders: int,
        common: bool,
        clock: ClockMode,
    ) -> tuple[str, str]:
        merged = CaseReportMerged(
            case_id=d.case_id,
            report_id=d.report_id,
            station_id=station_id,
            status=status,
            distinct_riders=riders,
            common_issue=common,
            version=version,
            clock=clock,
        )
        event = make_event("case.report_merged", merged, source=SERVICE, subject=d.case_id, time=now)
        note = "共性问题" if d.common_issue else None
        envelope = self._record(
            session, raw, d.case_id, version, now, "report_merged", status, station_id, event, note=note
        )
        return event.id, envelope or ""

    # ---- transitions (staff, scheduler, rider) --------------------------------------------------

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
        self._apply_effects(session, case, outcome, req, now, photo_ids or [])
        case.status = outcome.status
        if outcome.rule.stamp:
            setattr(case, outcome.rule.stamp, now)
        self._bump(case, now)
        self.refresh_sla(session, case)
        session.add(case)
        reason = req.reason if action in ("return", "reject") else deadline
        note = (req.note or "").strip() or None
        extension = None
        if action == "request_extension":
            extension = req.hours
        elif action == "approve_extension":
            extension = case.extension_hours
        event = self._transitioned(
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
        self._record(
            session,
            None,
            case.case_id,
            case.version,
            now,
            action,
            case.status,
            case.station_id,
            event,
            actor=actor_name,
            note=note,
            prev_station_id=prev_station if prev_station != case.station_id else None,
            reason=reason,
        )
        after_commit(session, lambda: metrics.case_transitions.labels(action).inc())
        return Applied(case, action, outcome.event)

    def _apply_effects(
        self,
        session: Session,
        case: Case,
        outcome: Outcome,
        req: Request,
        now: datetime,
        photo_ids: list[str],
    ) -> None:
        action = outcome.rule.action
        category = case.category
        submitted = as_utc(case.submitted_at)
        if action == "acknowledge":
            self._late(session, case, "ack", now)
            seconds = max((now - submitted).total_seconds(), 0.0)
            after_commit(session, lambda: metrics.case_ack_seconds.labels(category).observe(seconds))
        elif action == "dispatch":
            case.assignee = (req.assignee or "").strip()[:60]
        elif action == "resolve":
            self._late(session, case, "resolve", now)
            case.confirm_due = now + self.confirm_window
            case.extension_pending_hours = None
            if photo_ids:
                case.after_photo_ids = ",".join([*filter(None, case.after_photo_ids.split(",")), *photo_ids])
            seconds = max((now - submitted).total_seconds(), 0.0)
            after_commit(session, lambda: metrics.case_resolve_seconds.labels(category).observe(seconds))
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

    # ---- out of hours: the duty roster (值班) ---------------------------------------------------

    def _duty(self, session: Session, case: Case, now: datetime) -> duty.OnDuty | None:
        """Who on duty a case goes to now, or None when it does not go to duty (services/closer/duty.py)."""
        if not duty.goes_to_duty(case.clock, self.calendars.of(case.street_id), now):
            return None
        return dutystore.current(session, self.j, case.street_id, now)

    def _record_duty(
        self,
        session: Session,
        raw: Raw | None,
        case: Case,
        on: duty.OnDuty,
        now: datetime,
        why: str,
        report_ids: list[str] | None = None,
    ) -> None:
        """The timeline note and the `case.on_duty` event (what a notifier will read) of a case that
        went to duty; the case row already carries the holder and its new version."""
        source = "值班表 roster" if on.source == "roster" else "无排班: 城运中心 no roster: centre"
        holder = f"{on.label} ({source})"
        note = f"{why}非工作时间转值班 (out of hours, to duty): {holder}"
        event = self._transitioned(
            session,
            case,
            "case.on_duty",
            "on_duty",
            now,
            note=note,
            duty_station_id=on.station_id,
            duty_username=on.username,
            report_ids=report_ids,
        )
        self._record(
            session,
            raw,
            case.case_id,
            case.version,
            now,
            "on_duty",
            case.status,
            case.station_id,
            event,
            note=note,
        )

    def _late(self, session: Session, case: Case, deadline: sla.Deadline, now: datetime) -> None:
        """A milestone reached after its deadline is a breach, counted once even if never escalated."""
        due = case.ack_due if deadline == "ack" else case.resolve_due
        if due is None or now <= as_utc(due):
            return
        if self.record_breach(session, case, deadline, as_utc(due), now, late=True):
            _count_breach(session, case.station_id, deadline)

    def _transitioned(
        self,
        session: Session,
        case: Case,
        event_name: str,
        action: str,
        now: datetime,
        **extra: Any,
    ) -> CloudEvent:
        """The `cases.events` event of a transition (`report_ids`: given when not all written yet)."""
        report_ids = extra.pop("report_ids", None)
        if report_ids is None:
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
            clock=clock_of(case),
            **extra,
        )
        return make_event(event_name, data, source=SERVICE, subject=case.case_id, time=now)

    # ---- the rider's feedback -------------------------------------------------------------------

    def feedback(self, session: Session, d: ReportFeedback, now: datetime) -> Applied | None:
        """Keep the rating and comment; close a resolved case on yes, reopen it on no."""
        case = session.exec(select(Case).where(Case.case_id == d.case_id).with_for_update()).first()
        if case is None:
            raise UnknownCase(f"no case {d.case_id}")
        report = session.get(CaseReport, d.report_id)
        if report is not None and report.case_id == case.case_id:
            report.fixed, report.rating = d.fixed, d.rating
            report.comment = d.comment or None
            report.feedback_at = d.at
            session.add(report)
        if d.rating is not None:
            case.rating = d.rating
        comment = d.comment.strip()
        if case.status == CaseStatus.RESOLVED:
            if d.fixed:
                req = Request("confirm", note=comment or None)
                case.rider_confirmed = True  # the figures' "fixes confirmed by riders"
            else:
                # the reporter requires a comment to deny; an empty one still reopens the case
                req = Request("reopen", note=comment or "骑手反馈未解决 (rider says not fixed)")
            return self.transition(session, case, "system", "rider", req, now)
        # late or repeated feedback: the rating is kept, the state does not change (and no event)
        self._bump(case, now)
        session.add(case)
        self._record(
            session,
            None,
            case.case_id,
            case.version,
            now,
            "feedback",
            case.status,
            case.station_id,
            None,
            actor="rider",
            note=comment or None,
        )
        log.info("feedback on %s in state %s: kept, no transition", case.case_id, case.status)
        return None

    # ---- the conversation (services/closer/conversation.py) -----------------------------------

    def _message(
        self,
        session: Session,
        case: Case,
        kind: str,
        actor: str,
        text: str,
        now: datetime,
        **fields: Any,
    ) -> CaseMessage:
        """The message row of a conversation entry (flushed: it has its id) and the case's new version."""
        message = CaseMessage(case_id=case.case_id, kind=kind, actor=actor, text=text, at=now, **fields)
        session.add(message)
        session.flush()
        self._bump(case, now)
        session.add(case)
        return message

    def _announce(
        self, session: Session, case: Case, message: CaseMessage, data: EventData, now: datetime
    ) -> None:
        """The entry's timeline row (what the live queue shows) and its event on `cases.events`."""
        kind = message.kind
        event = make_event(conversation.EVENTS[kind], data, source=SERVICE, subject=case.case_id, time=now)
        self._record(
            session,
            None,
            case.case_id,
            case.version,
            now,
            conversation.ACTIONS[kind],
            case.status,
            case.station_id,
            event,
            actor=message.actor,
            note=message.text or None,
        )

    def _report_ids(self, session: Session, case_id: str) -> list[str]:
        return list(
            session.exec(
                select(CaseReport.report_id)
                .where(CaseReport.case_id == case_id)
                .order_by(col(CaseReport.submitted_at))
            )
        )

    def converse(
        self, session: Session, case: Case, kind: str, actor_name: str, text: str, now: datetime
    ) -> CaseMessage:
        """A staff entry (checked by the caller): an internal note, a public update or a question."""
        message = self._message(session, case, kind, actor_name, text, now)
        assert message.id is not None
        data: EventData
        if kind == "note":  # the words stay here: the event only says a note was written
            data = CaseCommented(
                case_id=case.case_id,
                station_id=case.station_id,
                version=case.version,
                at=now,
                actor=actor_name,
                message_id=message.id,
            )
        else:
            model = CaseUpdatedPublic if kind == "public" else CaseQuestionAsked
            data = model(
                case_id=case.case_id,
                station_id=case.station_id,
                version=case.version,
                at=now,
                message_id=message.id,
                text=text,
                report_ids=self._report_ids(session, case.case_id),
            )
        self._announce(session, case, message, data, now)
        return message

    def _case_for_rider(self, session: Session, case_id: str) -> Case:
        case = session.exec(select(Case).where(Case.case_id == case_id).with_for_update()).first()
        if case is None:
            raise UnknownCase(f"no case {case_id}")
        return case

    def rider_replied(self, session: Session, d: CaseRiderReplied, now: datetime) -> CaseMessage:
        """A rider's words or photo (from the reporter): on the conversation and the timeline; announced
        on `cases.events` without the rider's words or photos."""
        case = self._case_for_rider(session, d.case_id)
        question = d.question_id
        if question is not None:
            asked = session.get(CaseMessage, question)
            if asked is None or asked.case_id != case.case_id or asked.kind != "question":
                question = None  # not a question of this case: kept as a plain reply
        message = self._message(
            session,
            case,
            "reply",
            "rider",
            d.text.strip(),
            now,
            report_id=d.report_id,
            question_id=question,
            photo_ids=",".join(d.photo_ids)[:400],
        )
        data = CaseRiderReplied(
            report_id=d.report_id,
            case_id=case.case_id,
            reply_id=d.reply_id,
            question_id=question,
            at=now,
            station_id=case.station_id,
            version=case.version,
        )
        self._announce(session, case, message, data, now)
        return message

    def nudged(self, session: Session, d: CaseNudged, now: datetime) -> CaseMessage:
        """A rider's 催办: the case goes on the centre's supervision list (督办) and the station is told
        (`case.nudged` on `cases.events`, with what notification rules match on)."""
        case = self._case_for_rider(session, d.case_id)
        case.supervised = True
        case.nudges += 1
        case.nudged_at = now
        message = self._message(session, case, "nudge", "rider", "", now, report_id=d.report_id)
        data = CaseNudged(
            report_id=d.report_id,
            case_id=case.case_id,
            at=now,
            station_id=case.station_id,
            category=case.category,
            priority=case.priority,
            status=case.status,
            version=case.version,
            nudges=case.nudges,
        )
        self._announce(session, case, message, data, now)
        return message

    # ---- a changed calendar ---------------------------------------------------------------------

    def replan(
        self, session: Session, case: Case, calendars: sla.StreetCalendars, now: datetime, note: str
    ) -> bool:
        """Re-plan an open case's deadlines on a changed calendar; a timeline note and `case.replanned`
        when they moved (False, and nothing written, when they did not)."""
        before = (case.ack_due, case.resolve_due)
        self.refresh_sla(session, case, calendars)
        if _same(before[0], case.ack_due) and _same(before[1], case.resolve_due):
            return False
        self._bump(case, now)
        session.add(case)
        moved = ", ".join(
            f"{name} {_iso(old)} → {_iso(new)}"
            for name, old, new in (("ack", before[0], case.ack_due), ("resolve", before[1], case.resolve_due))
            if not _same(old, new)
        )
        text = f"{note}: {moved}"
        event = self._transitioned(session, case, "case.replanned", "replan", now, note=text)
        self._record(
            session,
            None,
            case.case_id,
            case.version,
            now,
            "replan",
            case.status,
            case.station_id,
            event,
            note=text,
        )
        return True

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
            _count_breach(session, station, deadline)
            applied.append(result)
        if not applied:
            case.escalate_at = next_escalation(case)
            session.add(case)
            return applied
        on = self._duty(session, case, now)
        if on is not None:  # every escalation out of hours is a new alert for whoever is on duty
            case.duty_station_id, case.duty_username = on.station_id, on.username
            self._bump(case, now)
            session.add(case)
            self._record_duty(session, None, case, on, now, "超时升级")
        return applied

    def auto_close(self, session: Session, case: Case, now: datetime) -> Applied:
        """Close a resolved case the rider did not answer within the confirm window."""
        req = Request("auto_close", note="骑手未在确认期内答复,自动结案 (no answer: closed)")
        return self.transition(session, case, "system", "scheduler", req, now)

    # ---- issue 17: staff thank the riders (致谢) -------------------------------------------------

    def thank(
        self, session: Session, case: Case, preset: str, text: str, actor_name: str, now: datetime
    ) -> CaseThanks:
        """Staff's thank-you (checked by the caller: services/closer/thanks.py): its row (one per
        case), the case's new version, a timeline row and `case.riders_thanked` to every rider."""
        thanks = CaseThanks(case_id=case.case_id, preset=preset, text=text, actor=actor_name, at=now)
        session.add(thanks)
        session.flush()
        self._bump(case, now)
        session.add(case)
        data = CaseRidersThanked(
            case_id=case.case_id,
            station_id=case.station_id,
            version=case.version,
            at=now,
            preset=preset,
            text=text,
            report_ids=self._report_ids(session, case.case_id),
        )
        event = make_event("case.riders_thanked", data, source=SERVICE, subject=case.case_id, time=now)
        self._record(
            session,
            None,
            case.case_id,
            case.version,
            now,
            "thank_riders",
            case.status,
            case.station_id,
            event,
            actor=actor_name,
            note=text or None,
        )
        return thanks


def clock_of(case: Case) -> ClockMode:
    """The case's stored clock as the contract's type."""
    return _clock(case.clock)


def _clock(stored: str) -> ClockMode:
    return "calendar" if stored == "calendar" else "working"


def _iso(at: datetime | None) -> str:
    return as_utc(at).isoformat() if at is not None else "none"


def _count_breach(session: Session, station: str, deadline: str) -> None:
    """Count one missed deadline once the transaction committed."""
    after_commit(session, lambda: metrics.sla_breaches.labels(station, deadline).inc())


# one round trip: is the report known already, and the case's priority if the case exists
_SEEN = statement(
    "SELECT (SELECT 1 FROM case_report WHERE report_id = :report), "
    '(SELECT priority FROM "case" WHERE case_id = :case)'
)
_REPLAY = statement("SELECT case_id, event_id, envelope FROM case_report WHERE report_id = :id")
# atomic next to staff transitions of the same case (PostgreSQL takes the row lock); the larger of
# the rider counts, a sticky common-issue flag
_MERGE = statement(
    'UPDATE "case" SET report_count = report_count + 1, '
    "distinct_riders = CASE WHEN distinct_riders < :riders THEN :riders ELSE distinct_riders END, "
    "common_issue = (common_issue OR :common), version = version + 1, updated_at = :now "
    "WHERE case_id = :id RETURNING station_id, status, version, distinct_riders, common_issue, clock"
)
