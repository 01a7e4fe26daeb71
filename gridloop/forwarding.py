"""What the entry proxy decides, without I/O: the request head it forwards and the order it tries backends.

One request per connection (`gridloop/proxy.py`): the head is parsed, hop-by-hop headers are dropped,
the peer is appended to X-Forwarded-For and `Connection: close` is set, so the backend closes the
connection after its answer and the bytes that follow the head (the body) are the one request's.
Framing headers (Content-Length, Transfer-Encoding) pass unchanged, because the body passes unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from gridloop.errors import error_body

MAX_HEAD_BYTES = 64 * 1024
"""Largest request line and headers the proxy reads (431 above): what uvicorn itself accepts."""

# hop-by-hop (RFC 9110 7.6.1) except Transfer-Encoding, whose framing the piped body keeps
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"})
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class BadRequestHead(ValueError):
    """A request head the proxy will not forward (answered 400)."""


@dataclass(frozen=True)
class RequestHead:
    """The request line and the header fields, in order, as the client sent them."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]

    def values(self, name: str) -> list[str]:
        """Every value of one header field (case-insensitive name)."""
        return [value for key, value in self.headers if key.lower() == name]


def parse_head(raw: bytes) -> RequestHead:
    """The head of one request (up to and including the blank line); BadRequestHead when malformed.

    Strict where a lenient reading would let the proxy and the backend disagree on where the body
    ends (request smuggling): no folded lines, no space before the colon, no bare CR or LF, one
    Content-Length, and never Content-Length together with Transfer-Encoding."""
    if not raw.endswith(b"\r\n\r\n"):
        raise BadRequestHead("the request head is not terminated")
    text = raw[:-4].decode("latin-1")
    request_line, *lines = text.split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[0] or not set(parts[0]) <= _TOKEN_CHARS or not parts[1]:
        raise BadRequestHead(f"bad request line {request_line[:100]!r}")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequestHead(f"unsupported HTTP version {version[:20]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or not set(name) <= _TOKEN_CHARS:
            raise BadRequestHead(f"bad header line {line[:100]!r}")
        if "\r" in value or "\n" in value:
            raise BadRequestHead("a bare CR or LF in a header")
        headers.append((name, value.strip(" \t")))
    head = RequestHead(method, target, version, tuple(headers))
    lengths = set(head.values("content-length"))
    if len(lengths) > 1 or (lengths and not next(iter(lengths)).isdigit()):
        raise BadRequestHead("conflicting or malformed Content-Length")
    if lengths and head.values("transfer-encoding"):
        raise BadRequestHead("both Content-Length and Transfer-Encoding")
    return head


def forwarded_head(head: RequestHead, peer: str) -> bytes:
    """The head sent to a backend: hop-by-hop fields dropped, the peer appended to X-Forwarded-For
    (earlier hops kept: the services walk them against GRIDLOOP_TRUSTED_PROXIES), Connection: close."""
    named = {
        token.strip().lower() for value in head.values("connection") for token in value.split(",") if token
    }
    dropped = HOP_BY_HOP | named | {"x-forwarded-for"}
    hops = [value for value in head.values("x-forwarded-for") if value.strip()]
    lines = [f"{head.method} {head.target} {head.version}"]
    lines += [f"{name}: {value}" for name, value in head.headers if name.lower() not in dropped]
    lines.append("X-Forwarded-For: " + ", ".join([*hops, peer]))
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def try_order(start: int, healthy: Sequence[bool]) -> list[int]:
    """The backends to try for one request: round-robin from `start` over the healthy ones, then the
    others as a last resort (a health check may be stale; a refused connect costs little)."""
    count = len(healthy)
    rotated = [(start + step) % count for step in range(count)]
    return [i for i in rotated if healthy[i]] + [i for i in rotated if not healthy[i]]


def is_ready(status_line: bytes) -> bool:
    """Whether a backend's answer to GET /readyz says it is ready (200)."""
    parts = status_line.split(b" ", 2)
    return len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1] == b"200"


REASONS = {400: "Bad Request", 431: "Request Header Fields Too Large", 502: "Bad Gateway"}


def error_response(status: int, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 answer of the proxy's own, in the services' error envelope (gridloop.errors)."""
    body = json.dumps(error_body(code, message)).encode()
    head = (
        f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body
