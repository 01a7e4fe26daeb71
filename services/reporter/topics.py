"""Topics (议题) for the riders, kept from `topics.events`: which case is in which topic, and what each
tracking page shows of it (what, who takes it up, the meeting's date and decision, the outcome).

Plain SQL inside the consumer's batch transaction, like the read model: an event applies only when
its topic version is newer than the stored one, so a redelivered or older event changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from gridloop.clock import as_utc
from gridloop.rawsql import Raw, in_list, insert_row, statement, table_of
from schemas.events import TopicCasesLinked, TopicClosed, TopicMeetingRecorded, TopicOpened
from services.reporter.models import TopicCaseView, TopicView

TOPIC = table_of(TopicView)
LINK = table_of(TopicCaseView)

_VERSION = statement("SELECT version FROM topic_view WHERE topic_id = :id")
_UNLINK = statement("DELETE FROM topic_case_view WHERE topic_id = :id")
_MEETING = statement(
    "UPDATE topic_view SET held_on = :held_on, decision = :decision, follow_up_due = :due, "
    "version = :version, updated_at = :at WHERE topic_id = :id AND version < :version"
)
_CLOSED = statement(
    "UPDATE topic_view SET status = 'closed', outcome = :outcome, resolves = :resolves, "
    "version = :version, updated_at = :at WHERE topic_id = :id AND version < :version"
)
_LINKED = statement(
    "UPDATE topic_view SET version = :version, updated_at = :at WHERE topic_id = :id AND version < :version"
)


def _link(raw: Raw, topic_id: str, case_ids: list[str]) -> None:
    """The topic's cases are exactly `case_ids` (a case moved from another topic moves here)."""
    raw.run(_UNLINK, {"id": topic_id})
    if case_ids:
        params: dict[str, Any] = {}
        raw.run(f"DELETE FROM topic_case_view WHERE case_id IN {in_list('c', case_ids, params)}", params)
    for case_id in case_ids:
        insert_row(raw, LINK, {"case_id": case_id, "topic_id": topic_id})


def opened(raw: Raw, data: TopicOpened) -> None:
    """`topic.opened`: the topic and its cases (once)."""
    if raw.first(_VERSION, {"id": data.topic_id}) is not None:
        return
    insert_row(
        raw,
        TOPIC,
        {
            "topic_id": data.topic_id,
            "title": data.title,
            "body": data.body,
            "status": "open",
            "version": data.version,
            "resolves": False,
            "updated_at": data.at,
        },
    )
    _link(raw, data.topic_id, data.case_ids)


def cases_linked(raw: Raw, data: TopicCasesLinked) -> None:
    """`topic.cases_linked`: the topic's cases now."""
    if raw.run(_LINKED, {"id": data.topic_id, "version": data.version, "at": raw.ts(data.at)}):
        _link(raw, data.topic_id, data.case_ids)


def meeting_recorded(raw: Raw, data: TopicMeetingRecorded) -> None:
    """`topic.meeting_recorded`: the meeting's date, decision and follow-up deadline."""
    raw.run(
        _MEETING,
        {
            "id": data.topic_id,
            "held_on": data.held_on.isoformat(),
            "decision": data.decision,
            "due": data.follow_up_due.isoformat() if data.follow_up_due else None,
            "version": data.version,
            "at": raw.ts(data.at),
        },
    )


def closed(raw: Raw, data: TopicClosed) -> None:
    """`topic.closed`: the outcome, on every linked case's tracking page."""
    changed = raw.run(
        _CLOSED,
        {
            "id": data.topic_id,
            "outcome": data.outcome,
            "resolves": data.resolves,
            "version": data.version,
            "at": raw.ts(data.at),
        },
    )
    if changed:
        _link(raw, data.topic_id, data.case_ids)


def for_case(session: Session, case_id: str | None) -> dict[str, Any] | None:
    """The topic a case is in, as its tracking page shows it; None when in none."""
    if case_id is None:
        return None
    link = session.get(TopicCaseView, case_id)
    topic = session.get(TopicView, link.topic_id) if link else None
    if topic is None:
        return None
    updated: datetime = as_utc(topic.updated_at)
    return {
        "topic_id": topic.topic_id,
        "title": topic.title,
        "body": topic.body,
        "status": topic.status,
        "held_on": topic.held_on,
        "decision": topic.decision,
        "follow_up_due": topic.follow_up_due,
        "outcome": topic.outcome,
        "resolves": topic.resolves,
        "updated_at": updated.isoformat(),
    }
