"""The reporter's Kafka handlers (`cases.events`, `staff.events`), thin: take the event, change the
read model (or the staff tokens' state).

They run inside the consumer's batch transaction in plain SQL (the consumer is `plain_sql=True`);
services.reporter.readmodel decides what each event changes.
"""

from __future__ import annotations

from gridloop.consumer import Handler, Incoming
from gridloop.rawsql import Raw, Tx
from schemas.events import (
    REGISTRY,
    CaseOpened,
    CaseQuestionAsked,
    CaseReportMerged,
    CaseTransitioned,
    CaseUpdatedPublic,
    StaffTokensRevoked,
)
from services.reporter import conversation, readmodel, staff_tokens

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


def on_updated_public(session: Tx, item: Incoming) -> None:
    """`case.updated_public`: an update staff published shows on the case's tracking pages."""
    data = item.data
    assert isinstance(data, CaseUpdatedPublic)
    conversation.public_message(Raw(session), data, "public")


def on_question_asked(session: Tx, item: Incoming) -> None:
    """`case.question_asked`: a question to the case's riders shows on their tracking pages."""
    data = item.data
    assert isinstance(data, CaseQuestionAsked)
    conversation.public_message(Raw(session), data, "question")


def on_staff_tokens_revoked(session: Tx, item: Incoming) -> None:
    """`staff.tokens_revoked`: an account's older tokens (or all, when disabled) stop working here."""
    data = item.data
    assert isinstance(data, StaffTokensRevoked)
    staff_tokens.tokens_revoked(Raw(session), data)


def handlers() -> dict[str, Handler]:
    """The `cases.events` and `staff.events` handlers of the reporter's consumer.

    `case.commented` (a note's existence, never its words), and the closer's own `case.rider_replied`
    and `case.nudged` (the reporter wrote those itself) have no handler: they are skipped."""
    return {
        "case.updated_public": on_updated_public,
        "case.question_asked": on_question_asked,
        "staff.tokens_revoked": on_staff_tokens_revoked,
        "case.opened": on_case_opened,
        "case.report_merged": on_report_merged,
        **{f"case.{name}": on_case_transition for name in TRANSITIONS},
    }
