"""The conversation's events and pure rules: the five payloads, the 24-hour nudge window, who may
write what on a case."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from schemas.envelope import CloudEvent
from schemas.events import (
    CaseCommented,
    CaseNudged,
    CaseQuestionAsked,
    CaseRiderReplied,
    CaseUpdatedPublic,
    make_event,
    parse_data,
)
from services.closer.conversation import Unacceptable, check_entry
from services.reporter import nudges

AT = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)


def round_trip(name: str, data: object) -> object:
    """Wrap, serialise, parse and validate an event as a consumer would."""
    event = make_event(name, data, source="closer", subject="C1", time=AT)  # type: ignore[arg-type]
    return parse_data(CloudEvent.model_validate_json(event.model_dump_json()))


def test_the_five_events_round_trip_with_their_types() -> None:
    """Each payload survives the wire as its own model under `gridloop.case.<name>.v1`."""
    samples = {
        "case.commented": CaseCommented(
            case_id="C1", station_id="yh-s1", version=3, at=AT, actor="yh-s1", message_id=7
        ),
        "case.updated_public": CaseUpdatedPublic(
            case_id="C1",
            station_id="yh-s1",
            version=4,
            at=AT,
            message_id=8,
            text="明天更换",
            report_ids=["R1"],
        ),
        "case.question_asked": CaseQuestionAsked(
            case_id="C1", station_id="yh-s1", version=5, at=AT, message_id=9, text="是哪个井盖？"
        ),
        "case.rider_replied": CaseRiderReplied(
            report_id="R1", case_id="C1", reply_id="x" * 22, question_id=9, text="北门那个", at=AT
        ),
        "case.nudged": CaseNudged(report_id="R1", case_id="C1", at=AT),
    }
    for name, data in samples.items():
        event = make_event(name, data, source="closer", subject="C1", time=AT)
        assert event.type == f"gridloop.{name}.v1"
        assert round_trip(name, data) == data


def test_a_note_event_has_no_field_for_the_words() -> None:
    """case.commented carries who and when, never text: the note's words cannot reach Kafka."""
    assert set(CaseCommented.model_fields) == {
        "case_id",
        "station_id",
        "version",
        "at",
        "actor",
        "message_id",
    }


def test_public_words_are_capped_at_500() -> None:
    """An update, a question or a reply longer than a phone screen's 500 characters is refused."""
    for model in (CaseUpdatedPublic, CaseQuestionAsked):
        with pytest.raises(ValidationError):
            model(case_id="C1", station_id="s", version=1, at=AT, message_id=1, text="字" * 501)
    with pytest.raises(ValidationError):
        CaseRiderReplied(report_id="R1", case_id="C1", reply_id="r", text="字" * 501, at=AT)


def test_the_nudge_window_is_24_hours_to_the_second() -> None:
    """Never nudged: now. Nudged: 86400 s to wait at once, 1 s a second before the day is up, 0 at the
    day's end (rounded up, so waiting Retry-After is always enough)."""
    assert nudges.wait_seconds(None, AT) == 0
    assert nudges.next_nudge_at(None) is None
    assert nudges.wait_seconds(AT, AT) == 86400
    assert nudges.wait_seconds(AT, AT + timedelta(hours=23, minutes=59, seconds=59)) == 1
    assert nudges.wait_seconds(AT, AT + timedelta(hours=23, seconds=0.5)) == 3600
    assert nudges.wait_seconds(AT, AT + timedelta(hours=24)) == 0
    assert nudges.next_nudge_at(AT.replace(tzinfo=None)) == AT + timedelta(hours=24)  # SQLite: naive UTC
    assert nudges.cutoff(AT + timedelta(hours=24)) == AT


def test_who_may_write_what() -> None:
    """Staff and supervisors write; admins do not (403). Empty text 422, notes up to 2000 and public
    words up to 500 characters, no question on a closed or rejected case (409)."""
    assert check_entry("note", "  井盖已订货  ", "dispatched", "staff") == "井盖已订货"
    assert check_entry("public", "x" * 500, "new", "supervisor") == "x" * 500
    assert check_entry("note", "x" * 2000, "closed", "staff") == "x" * 2000
    assert check_entry("public", "已修复", "closed", "staff") == "已修复"
    refusals = [
        (("note", "x", "new", "admin"), 403, "forbidden"),
        (("shout", "x", "new", "staff"), 422, "invalid_kind"),
        (("note", "   ", "new", "staff"), 422, "text_required"),
        (("note", "x" * 2001, "new", "staff"), 422, "text_too_long"),
        (("public", "x" * 501, "new", "staff"), 422, "text_too_long"),
        (("question", "哪里？", "closed", "staff"), 409, "case_final"),
        (("question", "哪里？", "rejected", "supervisor"), 409, "case_final"),
    ]
    for args, status, code in refusals:
        with pytest.raises(Unacceptable) as caught:
            check_entry(*args)
        assert (caught.value.status, caught.value.code) == (status, code)
