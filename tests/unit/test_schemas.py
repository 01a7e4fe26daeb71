"""The event contract: golden samples, JSON Schema export, versioning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import events
from schemas.envelope import CloudEvent
from schemas.events import CaseOpened, ReportRouted, ReportSubmitted, UnknownEventType, parse_data
from schemas.export import SCHEMA_DIR, all_schemas

SAMPLES = Path(events.__file__).parent / "samples"
GOLDEN = {
    "report.submitted.v1.json": ReportSubmitted,
    "report.routed.v1.json": ReportRouted,
    "case.opened.v1.json": CaseOpened,
}


@pytest.mark.parametrize(("filename", "model"), GOLDEN.items())
def test_golden_samples_parse_and_round_trip(filename: str, model: type) -> None:
    """Each golden sample is a valid envelope whose data parses into its model and back unchanged."""
    raw = json.loads((SAMPLES / filename).read_text())
    event = CloudEvent.model_validate(raw)
    data = parse_data(event)
    assert isinstance(data, model)
    assert event.source.startswith("gridloop/") and event.datacontenttype == "application/json"
    assert json.loads(event.model_dump_json()) == raw
    assert data.model_dump(mode="json") == raw["data"]


@pytest.mark.parametrize("event_type", ["case.opened", "case.report_merged", "case.acknowledged"])
def test_case_events_without_a_clock_parse_as_working_time(event_type: str) -> None:
    """Events written before clock modes (issue 15) have no `clock`: they counted working time."""
    raw = json.loads((SAMPLES / "case.opened.v1.json").read_text())
    del raw["data"]["clock"]
    raw["type"] = f"gridloop.{event_type}.v1"
    raw["data"] |= {"action": "acknowledge", "at": "2026-11-24T01:40:00Z", "status": "acknowledged"}
    if event_type != "case.acknowledged":
        raw["data"] = {k: v for k, v in raw["data"].items() if k not in ("action", "at")}
        raw["data"]["status"] = "new"
    data = parse_data(CloudEvent.model_validate(raw))
    assert data.clock == "working"  # type: ignore[attr-defined]
    raw["data"]["clock"] = "calendar"
    assert parse_data(CloudEvent.model_validate(raw)).clock == "calendar"  # type: ignore[attr-defined]
    raw["data"]["clock"] = "sometimes"
    with pytest.raises(ValidationError):
        parse_data(CloudEvent.model_validate(raw))


def test_committed_json_schemas_match_the_models() -> None:
    """schemas/jsonschema is regenerated from the models (python -m schemas.export)."""
    for filename, schema in all_schemas().items():
        committed = json.loads((SCHEMA_DIR / filename).read_text())
        assert committed == json.loads(json.dumps(schema)), (
            f"{filename} is stale: run python -m schemas.export"
        )


def test_upcaster_turns_old_version_into_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """A v1 event on the topic is upcast when the code's model is v2."""
    monkeypatch.setitem(events.REGISTRY, "report.feedback", (2, events.ReportFeedback))
    monkeypatch.setitem(
        events.UPCASTERS, ("report.feedback", 1), lambda d: {**d, "comment": d.get("comment") or "(none)"}
    )
    old = CloudEvent(
        id="e1",
        source="gridloop/reporter",
        type="gridloop.report.feedback.v1",
        time="2026-11-24T00:00:00Z",
        subject="c1",
        data={"report_id": "r", "case_id": "c1", "fixed": True, "at": "2026-11-24T00:00:00Z"},
    )
    assert parse_data(old).comment == "(none)"  # type: ignore[attr-defined]


def test_unknown_and_future_types_are_refused() -> None:
    """A type this code does not know, or a newer version, is an error (the consumer dead-letters it)."""
    base = {"id": "e", "source": "gridloop/x", "time": "2026-11-24T00:00:00Z", "subject": "s", "data": {}}
    with pytest.raises(UnknownEventType):
        parse_data(CloudEvent(type="gridloop.report.nonsense.v1", **base))
    with pytest.raises(UnknownEventType):
        parse_data(CloudEvent(type="gridloop.report.submitted.v9", **base))
    with pytest.raises(ValidationError):
        CloudEvent(type="not-a-gridloop-type", **base)
