"""Logging set up as a process does it, into a buffer, for the tests of gridloop.logs and the access log."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gridloop import logs
from gridloop.logs import IDS


@contextmanager
def captured_logs(
    level: str = "INFO", log_format: logs.LogFormat = "json", service: str = "test"
) -> Iterator[io.StringIO]:
    """`gridloop.logs.setup` into a buffer; the test process's own logging comes back after."""
    root = logging.getLogger()
    handlers, root_level, hook = list(root.handlers), root.level, sys.excepthook
    out = io.StringIO()
    logs.setup(level, log_format, service, stream=out)
    try:
        yield out
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(root_level)
        sys.excepthook = hook
        logging.captureWarnings(False)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line, parsed (each must be one JSON object)."""
    return [json.loads(line) for line in text.splitlines()]


def ids_of(line: dict[str, Any]) -> dict[str, str]:
    """The correlation ids a JSON line carries."""
    return {name: line[name] for name in IDS if name in line}
