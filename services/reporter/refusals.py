"""Reports refused at intake, and `gridloop_reports_rejected_total`, counted once per refused request.

A refusal is raised inside group-commit work (services.reporter.reports.accept_report), and the
group commit may run that work twice (the careful pass replays a batch), so it is not counted where
it is raised: `count_refusals` wraps each intake request once, at its edge, and counts what comes out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from gridloop import metrics
from gridloop.errors import ApiError


class Refusal(ApiError):
    """An ApiError refusing a report, with the reason it is counted under."""

    def __init__(
        self,
        reason: str,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, code, message, details, headers=dict(headers) if headers else None)
        self.reason = reason


@contextmanager
def count_refusals() -> Iterator[None]:
    """Count the refusal an intake request ends with (wrap each request once, outside the group commit)."""
    try:
        yield
    except Refusal as exc:
        metrics.reports_rejected.labels(exc.reason).inc()
        raise
