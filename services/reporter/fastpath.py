"""The riders' JSON report, `POST /api/v1/reports`, served as plain ASGI in front of FastAPI.

Why: it is the one route every rider hits, hundreds of times a second in a storm, and FastAPI's
layers (a dozen middlewares, dependency solving, response validation) cost more CPU than storing the
report does (bench/RESULTS.md). This handler does what the FastAPI route does for a JSON body, with
the same checks, the same answers and errors, the same cookie and the same HTTP metrics, and passes
everything else on: multipart bodies with photos, other methods, other paths. The FastAPI route
stays, for those and for the OpenAPI document.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi.responses import JSONResponse
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gridloop import metrics
from gridloop.errors import ApiError, error_body
from services.reporter.context import RIDER_COOKIE
from services.reporter.refusals import count_refusals
from services.reporter.reports import IntakeContext, ReportAccepted, ReportIn

PATH = "/api/v1/reports"

# (body, context, idempotency key) -> the answer; raises ApiError
Submit = Callable[[ReportIn, IntakeContext, str | None], Awaitable[ReportAccepted]]


class JsonReportFastPath:
    """ASGI middleware: answers JSON report posts itself, hands every other request to `app`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        submit: Submit,
        read_json: Callable[[bytes], ReportIn],
        check_key: Callable[[str | None], None],
        too_large: Callable[[], ApiError],
        max_bytes: int,
        context: Callable[[str | None, Scope], tuple[IntakeContext, str | None]],
        set_cookie: Callable[[JSONResponse, str], None],
    ) -> None:
        self.app = app
        self.service = service
        self.submit = submit
        self.read_json = read_json
        self.check_key = check_key
        self.too_large = too_large
        self.max_bytes = max_bytes
        self.context = context
        self.set_cookie = set_cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if ctype != b"application/json":
            await self.app(scope, receive, send)  # photos come as multipart: FastAPI's route
            return
        start = time.perf_counter()
        status = 500
        try:
            response = await self._answer(scope, receive, headers)
            status = response.status_code
            await response(scope, receive, send)
        finally:
            metrics.http_requests.labels(self.service, "POST", PATH, f"{status // 100}xx").inc()
            metrics.http_duration.labels(self.service, "POST", PATH).observe(time.perf_counter() - start)

    async def _answer(self, scope: Scope, receive: Receive, headers: dict[bytes, bytes]) -> JSONResponse:
        try:
            with count_refusals():  # once per request, as the FastAPI route counts
                key = _text(headers.get(b"idempotency-key"))
                self.check_key(key)
                body = await self._body(receive, headers)
                report = self.read_json(body)
                ctx, new_token = self.context(_cookie(headers, RIDER_COOKIE), scope)
                answer = await self.submit(report, ctx, key)
        except ApiError as exc:
            return JSONResponse(
                error_body(exc.code, exc.message, exc.details), status_code=exc.status, headers=exc.headers
            )
        response = JSONResponse(answer.model_dump(), status_code=202)
        if new_token is not None:
            self.set_cookie(response, new_token)
        return response

    async def _body(self, receive: Receive, headers: dict[bytes, bytes]) -> bytes:
        """The request body, refused with 413 as soon as it passes the cap (before it is all read)."""
        length = headers.get(b"content-length")
        if length and length.isdigit() and int(length) > self.max_bytes:
            raise self.too_large()
        chunks = bytearray()
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                raise ApiError(400, "disconnected", "The client went away.")
            chunks += message.get("body", b"")
            if len(chunks) > self.max_bytes:
                raise self.too_large()
            if not message.get("more_body", False):
                return bytes(chunks)


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The request headers (lower-case names, as ASGI gives them); a repeated one keeps its first value."""
    out: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        out.setdefault(name, value)
    return out


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _cookie(headers: dict[bytes, bytes], name: str) -> str | None:
    """One cookie's value, parsed as Starlette parses it for the FastAPI routes."""
    raw = headers.get(b"cookie")
    return cookie_parser(raw.decode("latin-1")).get(name) if raw else None
