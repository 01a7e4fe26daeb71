"""The entry proxy (gridloop/proxy.py) in front of tiny backends on loopback, and its pure rules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from gridloop.brokers import free_port
from gridloop.forwarding import BadRequestHead, forwarded_head, parse_head, try_order
from gridloop.proxy import Backend, Entry, EntrySpec


class TinyBackend:
    """An HTTP/1.1 server of a few lines: answers its name, the forwarded-for header, the body it got,
    or a stream whose second piece waits for `release`; keeps every request head it saw."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.heads: list[bytes] = []
        self.release = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = await reader.readuntil(b"\r\n\r\n")
        head = parse_head(raw)
        if head.target != "/readyz":
            self.heads.append(raw)
        length = int((head.values("content-length") or ["0"])[0])
        body = await reader.readexactly(length)
        if head.target == "/stream":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            writer.write(b"data: one\n\n")
            await writer.drain()
            await self.release.wait()
            writer.write(b"data: two\n\n")
        else:
            answer = {
                "/xff": ", ".join(head.values("x-forwarded-for")).encode(),
                "/echo": body,
            }.get(head.target, self.name.encode())
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(answer))
            writer.write(answer)
        await writer.drain()
        writer.close()


@asynccontextmanager
async def entry_over(*backends: TinyBackend, dead: int = 0) -> AsyncIterator[str]:
    """An entry on a free port over the backends (plus `dead` ports nobody listens on); its base URL."""
    for backend in backends:
        await backend.start()
    targets = [Backend("127.0.0.1", b.port) for b in backends]
    targets += [Backend("127.0.0.1", free_port()) for _ in range(dead)]
    entry = Entry("127.0.0.1", 0, targets, health_interval=0.2)
    await entry.start()
    try:
        yield f"http://127.0.0.1:{entry.port}"
    finally:
        await entry.stop()
        for backend in backends:
            await backend.stop()


async def test_round_robin_over_two_backends() -> None:
    """Six requests through one entry: three to each replica, taking turns."""
    a, b = TinyBackend("a"), TinyBackend("b")
    async with entry_over(a, b) as url, httpx.AsyncClient() as client:
        names = [(await client.get(url + "/")).text for _ in range(6)]
    assert names == ["a", "b", "a", "b", "a", "b"]
    assert len(a.heads) == 3 and len(b.heads) == 3


async def test_a_dead_backend_is_skipped_and_every_request_succeeds() -> None:
    """One replica is down (connection refused): each request is retried on the live one, none fails."""
    live = TinyBackend("live")
    async with entry_over(live, dead=1) as url, httpx.AsyncClient() as client:
        answers = [await client.get(url + "/") for _ in range(6)]
    assert [(r.status_code, r.text) for r in answers] == [(200, "live")] * 6
    assert len(live.heads) == 6


async def test_no_live_backend_is_a_502() -> None:
    """Every replica down: the proxy answers 502 in the error envelope."""
    async with entry_over(dead=2) as url, httpx.AsyncClient() as client:
        r = await client.get(url + "/")
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "bad_gateway"


async def test_x_forwarded_for_appends_the_peer_and_the_backend_closes() -> None:
    """The backend sees the client's earlier hops and the peer (127.0.0.1), and Connection: close."""
    backend = TinyBackend("a")
    async with entry_over(backend) as url, httpx.AsyncClient() as client:
        plain = await client.get(url + "/xff")
        hopped = await client.get(url + "/xff", headers={"X-Forwarded-For": "203.0.113.7"})
    assert plain.text == "127.0.0.1"
    assert hopped.text == "203.0.113.7, 127.0.0.1"
    head = parse_head(backend.heads[0])
    assert head.values("connection") == ["close"]
    assert len(head.values("x-forwarded-for")) == 1


async def test_a_request_body_passes_intact() -> None:
    """A 3 MB body with every byte value, sent at once and in 100 KB writes, arrives unchanged."""
    body = bytes(range(256)) * (3 * 4096)
    backend = TinyBackend("a")

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 100_000):
            yield body[i : i + 100_000]

    async with entry_over(backend) as url, httpx.AsyncClient() as client:
        sized = await client.post(url + "/echo", content=body)
        assert sized.content == body
        streamed = client.build_request("POST", url + "/echo", content=chunks())
        streamed.headers["Content-Length"] = str(len(body))
        streamed.headers.pop("Transfer-Encoding", None)
        assert (await client.send(streamed)).content == body


async def test_a_stream_arrives_in_pieces_before_the_backend_finishes() -> None:
    """Server-sent events pass unbuffered: the first is read while the backend still holds the second."""
    backend = TinyBackend("a")
    async with entry_over(backend) as url, httpx.AsyncClient() as client:
        async with client.stream("GET", url + "/stream") as response:
            pieces = response.aiter_raw()
            first = await asyncio.wait_for(anext(pieces), timeout=5)
            assert first == b"data: one\n\n"
            assert not backend.release.is_set()
            backend.release.set()
            rest = b"".join([chunk async for chunk in pieces])
    assert rest == b"data: two\n\n"


def test_parse_head_refuses_what_could_smuggle() -> None:
    """Ambiguous framing and malformed lines are refused before anything is forwarded."""
    ok = parse_head(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n")
    assert (ok.method, ok.target, ok.values("content-length")) == ("POST", "/x", ["3"])
    bad = [
        b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length : 3\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET /x HTTP/2.0\r\n\r\n",
        b"GET /x\r\n\r\n",
    ]
    for raw in bad:
        with pytest.raises(BadRequestHead):
            parse_head(raw)


def test_forwarded_head_drops_hop_by_hop_fields() -> None:
    """Connection and the fields it names go; Transfer-Encoding stays (the body keeps its framing)."""
    head = parse_head(
        b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n"
        b"Keep-Alive: 5\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n"
    )
    assert forwarded_head(head, "127.0.0.1") == (
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\nConnection: close\r\n\r\n"
    )


def test_try_order_turns_over_healthy_backends_first() -> None:
    """Round-robin from the turn; backends known down come last, in the same rotation."""
    assert try_order(0, [True, True, True]) == [0, 1, 2]
    assert try_order(4, [True, True, True]) == [1, 2, 0]
    assert try_order(1, [True, False, True]) == [2, 0, 1]
    assert try_order(0, [False, False]) == [0, 1]


def test_entry_spec_parses_the_command_line() -> None:
    """`HOST:PORT=HOST:PORT,HOST:PORT`, as the stack passes it."""
    spec = EntrySpec.parse("127.0.0.1:8001=127.0.0.1:9101,127.0.0.1:9102")
    assert spec == EntrySpec("127.0.0.1", 8001, (("127.0.0.1", 9101), ("127.0.0.1", 9102)))
    with pytest.raises(ValueError):
        EntrySpec.parse("127.0.0.1:8001")
