"""Free loopback ports and a dependency-free Kafka readiness probe.

The probe speaks just enough of the Kafka wire protocol (ApiVersions v0, then a non-flexible
Metadata request) to learn which brokers a cluster lists, so it works the same against
Apache Kafka and Tansu and does not drag a client library's retry and logging into start-up.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

_API_METADATA = 3
_API_VERSIONS = 18
_CLIENT_ID = b"gridloop-probe"


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on host right now."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return count distinct TCP ports that are free on host right now."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def parse_bootstrap(bootstrap_servers: str) -> list[tuple[str, int]]:
    """Split "host:port,host:port" into (host, port) pairs."""
    out: list[tuple[str, int]] = []
    for item in bootstrap_servers.split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"bad bootstrap server {item!r} (expected host:port)")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ValueError("empty bootstrap_servers")
    return out


@dataclass(frozen=True)
class BrokerInfo:
    """One broker as listed in a Metadata response."""

    node_id: int
    host: str
    port: int


class _Reader:
    """Cursor over a response body."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        """Unpack one fixed-size integer."""
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        """Read an int16-length (nullable) string."""
        length = self.take(">h")
        if length < 0:
            return None
        raw = self.data[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", "replace")


def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    header = struct.pack(">hhih", api_key, version, corr, len(_CLIENT_ID)) + _CLIENT_ID
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _recv_exact(sock, 4))[0]
    data = _recv_exact(sock, size)
    if struct.unpack_from(">i", data, 0)[0] != corr:
        raise ConnectionError("correlation id mismatch")
    return data[4:]


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        chunks += chunk
    return bytes(chunks)


def probe_metadata(host: str, port: int, timeout: float = 2.0) -> list[BrokerInfo]:
    """Ask one broker for cluster metadata and return the brokers it lists."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        reader = _Reader(_request(sock, _API_VERSIONS, 0, 1, b""))
        error = reader.take(">h")
        if error != 0:
            raise ConnectionError(f"ApiVersions error code {error}")
        ranges: dict[int, tuple[int, int]] = {}
        for _ in range(reader.take(">i")):
            key, low, high = reader.take(">h"), reader.take(">h"), reader.take(">h")
            ranges[key] = (low, high)
        low, high = ranges.get(_API_METADATA, (0, -1))
        version = max(low, 1)  # v1..v8 share one non-flexible layout we parse below
        if version > min(high, 8):
            raise ConnectionError(f"broker supports Metadata v{low}..v{high}, none of v1..v8")
        body = struct.pack(">i", 0)  # an empty topic list: brokers only
        if version >= 4:
            body += b"\x00"  # allow_auto_topic_creation = false
        if version >= 8:
            body += b"\x00\x00"  # no authorized-operations lists
        reader = _Reader(_request(sock, _API_METADATA, version, 2, body))
        if version >= 3:
            reader.take(">i")  # throttle_time_ms
        brokers: list[BrokerInfo] = []
        for _ in range(reader.take(">i")):
            node_id = reader.take(">i")
            broker_host = reader.string() or ""
            broker_port = reader.take(">i")
            reader.string()  # rack
            brokers.append(BrokerInfo(node_id, broker_host, broker_port))
        return brokers


def wait_for_kafka(
    bootstrap_servers: str,
    timeout: float,
    expect_brokers: int = 1,
    *,
    every_server: bool = False,
    check: Callable[[], None] | None = None,
) -> None:
    """Wait until the cluster answers Metadata listing expect_brokers brokers; else TimeoutError.

    With every_server, each listed bootstrap address must answer that way (not just one).
    check is called between attempts and may raise to abort early (e.g. a process died).
    """
    servers = parse_bootstrap(bootstrap_servers)
    deadline = time.monotonic() + timeout
    last: dict[tuple[str, int], str] = {s: "not probed yet" for s in servers}
    ready: set[tuple[str, int]] = set()
    while True:
        for server in servers:
            if server in ready:
                continue
            try:
                brokers = probe_metadata(*server, timeout=min(2.0, max(0.2, timeout)))
            except (OSError, ConnectionError, struct.error) as exc:
                last[server] = f"{type(exc).__name__}: {exc}"
                continue
            if len(brokers) >= expect_brokers:
                ready.add(server)
                if not every_server:
                    return
            else:
                ids = sorted(b.node_id for b in brokers)
                last[server] = f"lists {len(brokers)} broker(s) {ids}, waiting for {expect_brokers}"
        if ready.issuperset(servers):
            return
        if check is not None:
            check()
        if time.monotonic() >= deadline:
            detail = "; ".join(f"{h}:{p}: {last[(h, p)]}" for h, p in servers if (h, p) not in ready)
            raise TimeoutError(
                f"Kafka at {bootstrap_servers} did not list {expect_brokers} broker(s) "
                f"within {timeout:.0f}s ({detail})"
            )
        time.sleep(0.1)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Return True if something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False
