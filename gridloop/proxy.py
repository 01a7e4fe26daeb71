"""The entry proxy: one port per service in front of its replicas (what `gridloop up --replicas N` runs).

Design (the simplest honest HTTP/1.1): one request per client connection. The proxy reads the
request head, rewrites it (`gridloop.forwarding.forwarded_head`: X-Forwarded-For appended,
`Connection: close`), connects to a backend, and then pipes bytes both ways until the backend closes:
the body goes up as the client sends it, the answer comes down as the backend writes it, so a
server-sent event stream flows unbuffered. The backend's answer carries `Connection: close`, so the
client opens a new connection for its next request (on loopback that costs little).

Backends are taken round-robin among the healthy ones (`/readyz` polled every `health_interval`
seconds). A connect that fails marks the backend down and the next one is tried: nothing was sent
yet, so that retry is safe. Once the head is sent nothing is retried; a backend that dies before
answering a byte is answered 502. A client that goes away closes the backend connection (as nginx
does), so an abandoned live stream ends on the service too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from gridloop.forwarding import (
    MAX_HEAD_BYTES,
    BadRequestHead,
    error_response,
    forwarded_head,
    is_ready,
    parse_head,
    try_order,
)

log = logging.getLogger(__name__)
CHUNK = 64 * 1024
HEAD_TIMEOUT = 30.0  # a client that sends no complete head in this long is dropped


@dataclass
class Backend:
    """One replica behind an entry, and what the last check or connect said about it."""

    host: str
    port: int
    healthy: bool = True  # optimistic: a fresh proxy forwards at once, the first check corrects it

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class Entry:
    """One listening port in front of a service's replicas."""

    def __init__(
        self,
        host: str,
        port: int,
        backends: list[Backend],
        health_interval: float = 1.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self.host = host
        self.port = port
        self.backends = backends
        self.health_interval = health_interval
        self.connect_timeout = connect_timeout
        self._turn = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen, and poll the backends' /readyz in the background."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD_BYTES)
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]
        self._spawn(self._check_health())

    async def stop(self) -> None:
        """Stop listening and end every connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _mark(self, backend: Backend, healthy: bool, why: str) -> None:
        if backend.healthy != healthy:
            state, level = ("up", logging.INFO) if healthy else ("down", logging.WARNING)
            log.log(level, "entry :%d: backend %s is %s (%s)", self.port, backend, state, why)
        backend.healthy = healthy

    async def _check_health(self) -> None:
        while True:
            await asyncio.gather(*(self._probe(b) for b in self.backends))
            await asyncio.sleep(self.health_interval)

    async def _probe(self, backend: Backend) -> None:
        request = f"GET /readyz HTTP/1.1\r\nHost: {backend}\r\nConnection: close\r\n\r\n".encode()
        try:
            async with asyncio.timeout(max(self.connect_timeout, 1.0)):
                reader, writer = await asyncio.open_connection(backend.host, backend.port)
                try:
                    writer.write(request)
                    status = await reader.readline()
                finally:
                    writer.close()
            self._mark(backend, is_ready(status), status.decode("latin-1").strip() or "no answer")
        except (OSError, TimeoutError) as exc:
            self._mark(backend, False, f"/readyz: {exc.__class__.__name__}")

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A connection to the first backend that takes one, in round-robin order; None if none does."""
        start, self._turn = self._turn, self._turn + 1
        for index in try_order(start, [b.healthy for b in self.backends]):
            backend = self.backends[index]
            try:
                async with asyncio.timeout(self.connect_timeout):
                    return await asyncio.open_connection(backend.host, backend.port)
            except (OSError, TimeoutError) as exc:
                self._mark(backend, False, f"connect: {exc.__class__.__name__}")
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # so stop() ends open streams too
        try:
            await self._forward(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # a client or backend went away mid-way: nothing left to tell anyone
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            writer.write(error_response(431, "header_too_large", "The request head is too large."))
            return
        except asyncio.IncompleteReadError:
            return  # closed before a whole head: not a request
        try:
            head = parse_head(raw)
        except BadRequestHead as exc:
            writer.write(error_response(400, "bad_request", str(exc)))
            return
        peer = writer.get_extra_info("peername")
        upstream = await self._connect()
        if upstream is None:
            writer.write(error_response(502, "bad_gateway", "No replica of this service answers."))
            return
        up_reader, up_writer = upstream
        body = asyncio.ensure_future(_pipe_body(reader, up_writer))
        try:
            up_writer.write(forwarded_head(head, str(peer[0]) if peer else "unknown"))
            answered = await _pipe_answer(up_reader, writer, body)
            if not answered:
                writer.write(error_response(502, "bad_gateway", "The replica closed without an answer."))
        finally:
            body.cancel()
            up_writer.close()


async def _pipe_body(client: asyncio.StreamReader, backend: asyncio.StreamWriter) -> None:
    """Client → backend until the client closes (which means it is gone: see the module docstring)."""
    while chunk := await client.read(CHUNK):
        backend.write(chunk)
        await backend.drain()


async def _pipe_answer(
    backend: asyncio.StreamReader, client: asyncio.StreamWriter, body: asyncio.Future[None]
) -> bool:
    """Backend → client as it comes, until the backend or the client closes; whether a byte came."""
    answered = False
    while True:
        read = asyncio.ensure_future(backend.read(CHUNK))
        waiting: list[asyncio.Future[Any]] = [read, body]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not read.done():  # the client closed (or its body pipe failed) before the answer ended
            read.cancel()
            return True
        chunk = read.result()
        if not chunk:
            return answered
        answered = True
        client.write(chunk)
        await client.drain()


@dataclass(frozen=True)
class EntrySpec:
    """`HOST:PORT=BACKEND,BACKEND…` from the command line."""

    host: str
    port: int
    backends: tuple[tuple[str, int], ...]

    @classmethod
    def parse(cls, text: str) -> EntrySpec:
        """Parse `127.0.0.1:8001=127.0.0.1:9101,127.0.0.1:9102`; ValueError when malformed."""
        listen, eq, targets = text.partition("=")
        if not eq or not targets:
            raise ValueError(f"entry {text!r}: expected HOST:PORT=HOST:PORT,HOST:PORT")
        host, port = _host_port(listen)
        return cls(host, port, tuple(_host_port(t) for t in targets.split(",") if t.strip()))


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)


async def serve(specs: list[EntrySpec], health_interval: float = 1.0) -> None:
    """Run the entries until SIGTERM or SIGINT."""
    entries = [
        Entry(s.host, s.port, [Backend(h, p) for h, p in s.backends], health_interval=health_interval)
        for s in specs
    ]
    for entry in entries:
        await entry.start()
        log.info("entry %s:%d → %s", entry.host, entry.port, ", ".join(map(str, entry.backends)))
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    await stopped.wait()
    await asyncio.gather(*(entry.stop() for entry in entries))


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`gridloop proxy --entry HOST:PORT=BACKEND,BACKEND …`."""
    p = sub.add_parser("proxy", help="the entry proxy: one port per service in front of its replicas")
    p.add_argument(
        "--entry",
        action="append",
        required=True,
        type=EntrySpec.parse,
        help="HOST:PORT=HOST:PORT,HOST:PORT (listen = backends); repeat for several services",
    )
    p.add_argument("--health-interval", type=float, default=1.0, help="seconds between /readyz checks")
    p.set_defaults(func=cmd_proxy)


def cmd_proxy(args: argparse.Namespace) -> int:
    """Run the entry proxy in the foreground."""
    asyncio.run(serve(args.entry, args.health_interval))
    return 0
