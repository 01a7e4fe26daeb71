"""Every request's id and log context, and the access log (GRIDLOOP_ACCESS_LOG) of every service.

A request keeps a well-formed `X-Request-ID` it came with (a proxy's, a client's) or gets a new one;
the id is echoed in the response and put on every line logged while the request is handled, with the
report or case id its route names. The access line has the method, the path without its query string
(the query may carry a tracking secret `k` or an Open311 `api_key`), the status, the duration, the
client address as `gridloop.net` decides it, and those ids: never a header, cookie or token.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gridloop.logs import ACCESS_LOGGER, request_context
from gridloop.net import IPNetwork, client_address

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=/-]{0,127}")
"""An id we keep: what request-id schemes use (uuids, nginx's hex), nothing that could forge a line."""

access_log = logging.getLogger(ACCESS_LOGGER)


def request_id_of(scope: Scope) -> str:
    """The request's own X-Request-ID when it is well-formed, else a new one (32 hex digits)."""
    for name, value in scope.get("headers") or ():
        if name.lower() == b"x-request-id":
            text = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


def logged_path(scope: Scope) -> str:
    """The path as the client sent it (still percent-encoded: no control character reaches a line),
    without any query string."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes) and raw:
        # uvicorn leaves the query out of raw_path; some test clients put it in
        return raw.partition(b"?")[0].decode("latin-1")
    return str(scope.get("path", "")).encode("unicode_escape").decode("ascii")


class RequestLog:
    """Request id, log context and (when `enabled`) one access line per request (plain ASGI)."""

    def __init__(
        self, app: ASGIApp, enabled: bool = False, trusted_proxies: Sequence[IPNetwork] = ()
    ) -> None:
        self.app = app
        self.enabled = enabled
        self.trusted_proxies = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        header = (REQUEST_ID_HEADER.lower().encode(), request_id.encode())
        start = time.perf_counter()
        status = 500  # unless the app answers: an exception becomes ServerErrorMiddleware's 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        with request_context(request_id, scope):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                if self.enabled:
                    self._log(scope, status, (time.perf_counter() - start) * 1000)

    def _log(self, scope: Scope, status: int, duration_ms: float) -> None:
        """The access line, with its fields as `extra` (JSON keys; the text line repeats them)."""
        method = scope["method"]
        path = logged_path(scope)
        client = client_address(scope, self.trusted_proxies) or "-"
        duration = round(duration_ms, 1)
        access_log.info(
            "%s %s %d %.1fms %s",
            method,
            path,
            status,
            duration,
            client,
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": duration,
                "client": client,
            },
        )
