"""The reporter's Kafka handlers (`cases.events`, `staff.events`, `topics.events`), thin: take the
event, change the read model (or the staff tokens' state, or the topics riders see).

They run inside the consumer's batch transaction in plain SQL (the consumer is `plain_sql=True`);
services.reporter.readmodel decides what each event changes.
"""

from __future__ import annotations

from collections.abc import Callable

from gridloop import revocations
from gridloop.consumer import Handler, Incoming
from gridloop.rawsql import Raw, Tx, after_commit
from schemas.events import (
    REGISTRY,
    CaseOpened,
    CaseQuestionAsked,
    CaseReportMerged,
    CaseRidersThanked,
    CaseTransitioned,
    CaseUpdatedPublic,
    StaffTokensRevoked,
    TopicCasesLinked,
    TopicClosed,
    TopicMeetingRecorded,
    TopicOpened,
)
from services.reporter import conversation, push, readmodel, recognition, topics

TRANSITIONS = tuple(
    name.removeprefix("case.")
    for name, (_version, model) in REGISTRY.items()
    if name.startswith("case.") and model is CaseTransitioned
)
"""Every `case.<action>` event that carries a CaseTransitioned payload."""


def on_case_opened(session: Tx, item: Incoming) -> None:
    """`case.opened`: the report's receipt points at its new case."""
    data = item.data
    assert isinstance(data, CaseOpened)
    readmodel.case_opened(Raw(session), data)


def on_report_merged(session: Tx, item: Incoming) -> None:
    """`case.report_merged`: the report joined an existing case."""
    data = item.data
    assert isinstance(data, CaseReportMerged)
    readmodel.report_merged(Raw(session), data, item.event.time)


def on_case_transition(session: Tx, item: Incoming) -> None:
    """`case.<action>`: the case's view and its reports show the new status."""
    data = item.data
    assert isinstance(data, CaseTransitioned)
    readmodel.case_moved(Raw(session), data)


def published(kind: str, push_kind: str, wake: Callable[[], None] | None) -> Handler:
    """`case.updated_public` / `case.question_asked`: staff's words show on the case's tracking pages
    (`kind`), and every browser following the case is pushed (`push_kind`) in the same transaction."""

    def handle(session: Tx, item: Incoming) -> None:
        data = item.data
        assert isinstance(data, CaseUpdatedPublic | CaseQuestionAsked)
        raw = Raw(session)
        conversation.public_message(raw, data, kind)
        if push.queue_for_case(raw, data.case_id, item.event.id, push_kind) and wake:
            after_commit(session, wake)

    return handle


def pushed(kind: str, wake: Callable[[], None] | None) -> Handler:
    """`case.<action>` that also tells the riders following the case: the view moves, then a push per
    browser is queued in the same transaction (sent after the commit by services.reporter.push_sender)."""

    def handle(session: Tx, item: Incoming) -> None:
        on_case_transition(session, item)
        data = item.data
        assert isinstance(data, CaseTransitioned)
        if push.queue_for_case(Raw(session), data.case_id, item.event.id, kind, status=data.status) and wake:
            after_commit(session, wake)

    return handle


def on_staff_tokens_revoked(session: Tx, item: Incoming) -> None:
    """`staff.tokens_revoked`: an account's older tokens (or all, when disabled) stop working here."""
    data = item.data
    assert isinstance(data, StaffTokensRevoked)
    revocations.tokens_revoked(Raw(session), data)


def on_topic(session: Tx, item: Incoming) -> None:
    """`topic.*` (`topics.events`): the topic as its cases' tracking pages show it."""
    data = item.data
    raw = Raw(session)
    if isinstance(data, TopicOpened):
        topics.opened(raw, data)
    elif isinstance(data, TopicCasesLinked):
        topics.cases_linked(raw, data)
    elif isinstance(data, TopicMeetingRecorded):
        topics.meeting_recorded(raw, data)
    elif isinstance(data, TopicClosed):
        topics.closed(raw, data)


TOPIC_EVENTS = ("topic.opened", "topic.cases_linked", "topic.meeting_recorded", "topic.closed")


def thanked(wake: Callable[[], None] | None) -> Handler:
    """`case.riders_thanked`: staff's thank-you shows on every rider's own tracking page (kept once
    per case), and every browser following the case is pushed in the same transaction."""

    def handle(session: Tx, item: Incoming) -> None:
        data = item.data
        assert isinstance(data, CaseRidersThanked)
        raw = Raw(session)
        if not recognition.riders_thanked(raw, data, item.event.id):
            return
        if push.queue_for_case(raw, data.case_id, item.event.id, "thanked") and wake:
            after_commit(session, wake)

    return handle


def handlers(wake_push: Callable[[], None] | None = None) -> dict[str, Handler]:
    """The `cases.events` and `staff.events` handlers of the reporter's consumer (`wake_push`: tells
    the push sender that pushes were committed).

    `case.commented` (a note's existence, never its words), and the closer's own `case.rider_replied`
    and `case.nudged` (the reporter wrote those itself) have no handler: they are skipped."""
    return {
        "case.updated_public": published("public", "updated_public", wake_push),
        "case.question_asked": published("question", "question_asked", wake_push),
        "staff.tokens_revoked": on_staff_tokens_revoked,
        "case.opened": on_case_opened,
        "case.report_merged": on_report_merged,
        **{f"case.{name}": on_case_transition for name in TRANSITIONS},
        **{name: pushed(kind, wake_push) for name, kind in push.PUSH_KINDS.items()},
        **dict.fromkeys(TOPIC_EVENTS, on_topic),
        "case.riders_thanked": thanked(wake_push),  # issue 17
    }
