"""A lean open-loop HTTP/1.1 load generator (asyncio streams, keep-alive), cheap enough to share 2 cores.

Requests are scheduled at a fixed rate; latency counts from the scheduled time, so a slow server
cannot hide its queueing (no coordinated omission). Connections are kept alive unless the server
answers `Connection: close` (the entry proxy does, `gridloop/proxy.py`): then the next request opens
a new one, as a browser would.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    """Answers by status, latencies of accepted requests, and the time actually spent."""

    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    sent: int = 0

    def ok(self, status: int = 202) -> int:
        """How many got the expected status."""
        return self.statuses[status]

    def percentile(self, q: float) -> float:
        """Latency percentile in seconds (0 when none)."""
        if not self.latencies:
            return 0.0
        data = sorted(self.latencies)
        return data[min(int(q * len(data)), len(data) - 1)]


def _request(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: keep-alive",
    ]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """The status of one answer, read to its end, and whether the server closes the connection."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split(b" ", 2)[1])
    length = 0
    chunked = False
    closes = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value.strip())
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif lname == b"connection" and b"close" in value.lower():
            closes = True
    if chunked:
        while True:
            size = int((await reader.readline()).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, closes


async def run_load(
    url: str,
    make_body: Callable[[int], dict[str, object]],
    rate: float | None,
    seconds: float,
    connections: int = 64,
    idempotency: bool = True,
) -> LoadResult:
    """POST JSON bodies to url at `rate` per second (None: as fast as the connections go) for `seconds`."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    result = LoadResult()
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                i, scheduled = item
                headers = {"Idempotency-Key": uuid.uuid4().hex} if idempotency else {}
                payload = _request(f"{host}:{port}", parts.path, json.dumps(make_body(i)).encode(), headers)
                try:
                    writer.write(payload)
                    status, closes = await _read_response(reader)
                except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
                    result.errors[type(exc).__name__] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                if closes:
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                result.statuses[status] += 1
                if 200 <= status < 300:
                    result.latencies.append(time.perf_counter() - scheduled)
        finally:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    start = time.perf_counter()
    i = 0
    if rate is None:
        # closed loop: keep every connection busy
        while time.perf_counter() - start < seconds:
            while queue.qsize() < connections:
                queue.put_nowait((i, time.perf_counter()))
                i += 1
            await asyncio.sleep(0.001)
        while not queue.empty():
            queue.get_nowait()
    else:
        interval = 1.0 / rate
        while (now := time.perf_counter()) - start < seconds:
            due = start + i * interval
            if due <= now:
                queue.put_nowait((i, due))
                i += 1
                continue
            await asyncio.sleep(min(due - now, 0.005))
    result.sent = i
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers, return_exceptions=True)
    result.seconds = time.perf_counter() - start
    return result
