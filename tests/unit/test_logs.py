"""gridloop.logs and gridloop.access without a database: the JSON and text lines, the ids they carry,
the request id, the logged path, and the settings that turn them on."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from gridloop import logs
from gridloop.access import RequestLog, logged_path, request_id_of
from gridloop.consumer import IdempotentConsumer, Incoming
from gridloop.logs import current_ids, detached, envelope_ids, log_context
from gridloop.net import parse_networks
from gridloop.settings import Settings
from schemas.events import CaseOpened, ReportSubmitted, make_event
from tests.support.logs import captured_logs, json_lines

HEX32 = r"[0-9a-f]{32}"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The process's logging into a buffer (each test calls logs.setup with its format)."""
    with captured_logs() as out:
        yield out


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    """Every line written, parsed."""
    return json_lines(out.getvalue())


def test_json_line_has_exactly_the_documented_keys(captured: io.StringIO) -> None:
    """A plain line: time (ISO, UTC), level, logger, message, service, and nothing else."""
    logs.setup("INFO", "json", "reporter", stream=captured)
    logging.getLogger("gridloop.test").info("hello %s", "旅客")
    (line,) = lines(captured)
    assert list(line) == ["time", "level", "logger", "message", "service"]
    assert line["level"] == "INFO" and line["logger"] == "gridloop.test" and line["service"] == "reporter"
    assert line["message"] == "hello 旅客"
    assert line["time"].endswith("+00:00") and line["time"][10] == "T"


def test_json_line_with_ids_extras_and_exception(captured: io.StringIO) -> None:
    """Known ids follow the service in a fixed order, then `extra` fields, then exc_info."""
    logs.setup("INFO", "json", "closer", stream=captured)
    with log_context(case_id="c-1", event_id="e-1"), log_context(report_id="r-1", case_id=None):
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("gridloop.test").exception("failed", extra={"attempt": 2})
    (line,) = lines(captured)
    assert list(line) == [
        "time",
        "level",
        "logger",
        "message",
        "service",
        "event_id",
        "report_id",
        "case_id",
        "attempt",
        "exc_info",
    ]
    assert (line["event_id"], line["report_id"], line["case_id"], line["attempt"]) == ("e-1", "r-1", "c-1", 2)
    assert line["level"] == "ERROR"
    assert line["exc_info"].startswith("Traceback") and line["exc_info"].endswith("ValueError: boom")


def test_text_line_shows_the_ids_as_a_suffix(captured: io.StringIO) -> None:
    """The text format is the old one, with `[name=value …]` when there are ids (and only then)."""
    logs.setup("INFO", "text", "router", stream=captured)
    log = logging.getLogger("gridloop.test")
    log.info("plain")
    with log_context(event_id="e-9", case_id="c-9"):
        log.warning("with ids")
    first, second = captured.getvalue().splitlines()
    assert first.endswith(" INFO gridloop.test: plain")
    assert second.endswith(" WARNING gridloop.test: with ids [event_id=e-9 case_id=c-9]")


def test_setup_again_replaces_its_handler_and_quiets_the_chatty(captured: io.StringIO) -> None:
    """One handler of ours whatever the number of calls; aiokafka below ERROR is not shown; uvicorn's
    lines come through ours, its colour copy left out."""
    logs.setup("INFO", "text", "reporter", stream=io.StringIO())
    logs.setup("DEBUG", "json", "reporter", stream=captured)
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_gridloop_handler", False)]
    assert len(ours) == 1
    logging.getLogger("aiokafka").warning("connection refused")
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 7, extra={"color_message": "x"})
    (line,) = lines(captured)
    assert line["logger"] == "uvicorn.error" and line["message"] == "Started server process [7]"
    assert "color_message" not in line


def test_python_warnings_become_json_lines(captured: io.StringIO) -> None:
    """A library's warnings.warn is a line like any other (nothing on stderr that does not parse)."""
    import warnings

    logs.setup("INFO", "json", "reporter", stream=captured)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old API", DeprecationWarning, stacklevel=1)
    (line,) = lines(captured)
    assert line["logger"] == "py.warnings" and "DeprecationWarning: old API" in line["message"]


def test_context_is_per_event_and_does_not_leak() -> None:
    """The consumer's ids are set around one handler call, and gone for the next event."""
    seen: list[dict[str, str]] = []

    def handler(_session: Any, _item: Incoming) -> None:
        seen.append(current_ids())

    at = datetime(2026, 1, 1, tzinfo=UTC)
    opened = CaseOpened(case_id="c-1", report_id="r-1", station_id="s", category="x", opened_at=at)
    submitted = ReportSubmitted(report_id="r-2", channel="scan", category="x", submitted_at=at)
    for name, data in (("case.opened", opened), ("report.submitted", submitted)):
        event = make_event(name, data, source="closer", subject="s", time=at, event_id=f"e-{name}")
        IdempotentConsumer._call(None, handler, Incoming(event, data, "t", 0, 0, None), careful=False)  # type: ignore[arg-type]
    assert seen == [
        {"event_id": "e-case.opened", "report_id": "r-1", "case_id": "c-1"},
        {"event_id": "e-report.submitted", "report_id": "r-2"},
    ]
    assert current_ids() == {}


def test_envelope_ids_as_far_as_the_message_parses() -> None:
    """An outbox row's or a dead letter's ids come from its envelope; garbage names none."""
    assert envelope_ids(b'{"id": "e1", "data": {"report_id": "r1", "case_id": 7}}') == {
        "event_id": "e1",
        "report_id": "r1",
        "case_id": None,
    }
    assert envelope_ids(b"not json") == {}
    assert envelope_ids("[1, 2]") == {}


async def test_detached_task_starts_with_no_ids() -> None:
    """A loop started from inside a request or an event (the closer's poller, group commit's drainer)
    does not carry that request's ids; an ordinary task does."""

    async def ids() -> dict[str, str]:
        return current_ids()

    with log_context(request_id="req-1"):
        inherited = await asyncio.create_task(ids())
        fresh = await asyncio.create_task(ids(), context=detached())
    assert inherited == {"request_id": "req-1"} and fresh == {}


def scope(path: str = "/x", headers: list[tuple[bytes, bytes]] | None = None, **extra: Any) -> dict[str, Any]:
    """A minimal HTTP scope."""
    return {"type": "http", "method": "GET", "path": path, "headers": headers or [], **extra}


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (b"4bf92f3577b34da6a3ce929d0e0e4736", True),
        (b"req-1.2:3", True),
        (b"a" * 128, True),
        (b"a" * 129, False),
        (b"has space", False),
        (b"-leading-dash", False),
        (b'quote"d', False),
        (b"", False),
    ],
)
def test_incoming_request_id_is_kept_only_when_well_formed(given: bytes, kept: bool) -> None:
    """A proxy's or client's id is kept when it looks like one; otherwise a new 32-hex id."""
    got = request_id_of(scope(headers=[(b"x-request-id", given)]))
    if kept:
        assert got == given.decode()
    else:
        assert got != given.decode()
        assert len(got) == 32 and int(got, 16) >= 0


def test_logged_path_has_no_query_and_no_control_characters() -> None:
    """The raw path as sent (percent-encoded), with any query cut off; without raw_path, escaped."""
    assert logged_path(scope(raw_path=b"/t/R1%0Afake?k=secret")) == "/t/R1%0Afake"
    assert logged_path(scope(raw_path=b"/t/R1")) == "/t/R1"
    assert logged_path(scope(path="/t/R1\nfake")) == "/t/R1\\nfake"


async def test_request_log_echoes_the_id_and_logs_one_line(captured: io.StringIO) -> None:
    """The middleware alone: the id is echoed, the route's ids and the client behind a trusted proxy
    are on the line, the query and the credentials are not."""
    logs.setup("WARNING", "json", "reporter", stream=captured)  # the access log shows at any level

    async def app(s: Scope, _receive: Receive, send: Send) -> None:
        s["path_params"] = {"report_id": "R-7", "code": "W7Q2"}  # as the router does
        logging.getLogger("gridloop.test").warning("inside")
        await send(
            {"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b""})

    sent: list[dict[str, Any]] = []

    async def send(message: Message) -> None:
        sent.append(dict(message))

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    middleware = RequestLog(app, enabled=True, trusted_proxies=parse_networks("10.0.0.0/8"))
    request = scope(
        path="/api/v1/reports/R-7",
        raw_path=b"/api/v1/reports/R-7?k=tracking-secret",
        client=("10.1.2.3", 5555),
        headers=[
            (b"x-request-id", b"edge-42"),
            (b"x-forwarded-for", b"203.0.113.9"),
            (b"authorization", b"Bearer staff-token"),
            (b"cookie", b"gl_rider=rider-token"),
        ],
    )
    await middleware(request, receive, send)
    assert (b"x-request-id", b"edge-42") in sent[0]["headers"]
    inside, access = lines(captured)
    assert inside["message"] == "inside"
    assert (inside["request_id"], inside["report_id"]) == ("edge-42", "R-7")
    assert access["logger"] == "gridloop.access"
    assert access["message"] == f"GET /api/v1/reports/R-7 404 {access['duration_ms']:.1f}ms 203.0.113.9"
    assert list(access) == [
        "time",
        "level",
        "logger",
        "message",
        "service",
        "request_id",
        "report_id",
        "method",
        "path",
        "status",
        "duration_ms",
        "client",
    ]
    assert (access["method"], access["path"], access["status"], access["client"]) == (
        "GET",
        "/api/v1/reports/R-7",
        404,
        "203.0.113.9",
    )
    text = captured.getvalue()
    assert "tracking-secret" not in text and "staff-token" not in text and "rider-token" not in text


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """GRIDLOOP_LOG_FORMAT and GRIDLOOP_ACCESS_LOG, off and text by default."""
    monkeypatch.delenv("GRIDLOOP_LOG_FORMAT", raising=False)
    monkeypatch.delenv("GRIDLOOP_ACCESS_LOG", raising=False)
    assert (Settings().log_format, Settings().access_log) == ("text", False)
    monkeypatch.setenv("GRIDLOOP_LOG_FORMAT", "json")
    monkeypatch.setenv("GRIDLOOP_ACCESS_LOG", "true")
    assert (Settings().log_format, Settings().access_log) == ("json", True)
    monkeypatch.setenv("GRIDLOOP_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="log_format"):
        Settings()
