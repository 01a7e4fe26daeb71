"""Helpers for the closer's process-level tests: a closer process whose clock the test moves, SSE, Kafka.

The closer runs as its own process (as `gridloop up` runs it) with the process clock replaced by
one that reads an offset from a file, so a test moves time by writing the file instead of sleeping.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from kafka import KafkaProducer

from gridloop.cli import load_demo
from gridloop.demo import DEMO_PLACES
from gridloop.procs import spawn
from gridloop.settings import Settings
from gridloop.stack import Stack
from schemas.events import EventData, make_event
from schemas.reference import load_places

CLOCK_ENV = "GRIDLOOP_TEST_CLOCK_FILE"


class OffsetClock:
    """The real time plus an offset (seconds) read from a file the test writes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def now(self) -> datetime:
        """Now, shifted."""
        try:
            offset = float(self.path.read_text() or 0)
        except (OSError, ValueError):
            offset = 0.0
        return datetime.now(UTC) + timedelta(seconds=offset)


def run_closer() -> None:
    """Entry point of the closer process under test: install the offset clock, then serve."""
    from gridloop.cli import main
    from gridloop.clock import set_clock

    set_clock(OffsetClock(Path(os.environ[CLOCK_ENV])))
    sys.exit(main(["closer"]))


@dataclass
class ClockedStack(Stack):
    """The embedded stack whose closer process runs on a movable clock."""

    clock_file: Path | None = None

    def start_service(self, service: str, index: int = 0) -> None:
        """Start a service; the closer (one process) with the offset clock."""
        if service != "closer":
            super().start_service(service, index)
            return
        assert self.clock_file is not None
        env = self.service_env(service)
        env[CLOCK_ENV] = str(self.clock_file)
        cmd = [sys.executable, "-c", "from tests.support.clocked import run_closer; run_closer()"]
        self.procs[service] = spawn(cmd, self.log_dir / "closer.log", env=env)

    def set_clock(self, when: datetime) -> None:
        """Make the closer's now() be `when` (from this moment on, running)."""
        assert self.clock_file is not None
        self.clock_file.write_text(str((when - datetime.now(UTC)).total_seconds()))

    def closer_now(self) -> datetime:
        """The closer's current time."""
        assert self.clock_file is not None
        return OffsetClock(self.clock_file).now()


def start_clocked_stack(settings: Settings, **env: str) -> ClockedStack:
    """Start the stack with a clocked closer and wait until every service is ready."""
    clock_file = settings.var_dir / "closer-clock"
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    clock_file.write_text("0")
    stack = ClockedStack(
        settings=settings, broker="external", demo=load_demo, extra_env=dict(env), clock_file=clock_file
    )
    try:
        stack.start()
    except BaseException:
        stack.stop()
        raise
    return stack


def publish(
    bootstrap: str, topic: str, key: str, name: str, data: EventData, source: str = "reporter"
) -> None:
    """Publish one CloudEvent to Kafka and wait for the broker's acknowledgement."""
    event = make_event(name, data, source=source, subject=key, time=datetime.now(UTC))
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all")
    try:
        producer.send(topic, key=key.encode(), value=event.model_dump_json().encode()).get(timeout=30)
    finally:
        producer.close()


class SseReader:
    """Reads a server-sent event stream in a thread; events land in a queue."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()

    def _run(self, url: str, headers: dict[str, str]) -> None:
        with (
            httpx.Client(timeout=httpx.Timeout(10, read=None)) as client,
            client.stream("GET", url, headers=headers) as r,
        ):
            name = "message"
            for line in r.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    self.events.put((name, json.loads(line[6:])))
                    name = "message"

    def wait(self, pred: Any, timeout: float = 60.0) -> dict[str, Any]:
        """The first event (name, data) for which pred is true."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                name, data = self.events.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if pred(name, data):
                return data
        raise AssertionError("no matching server-sent event in time")

    def close(self) -> None:
        """Stop reading (the thread ends at the next line or with the process)."""
        self._stop.set()


def report(stack: ClockedStack, grid: str, category: str, text: str) -> str:
    """A rider's report at a demo place of `grid`, through the reporter; returns its id."""
    place = next(p for p in load_places(DEMO_PLACES) if p.grid_id == grid)
    r = httpx.post(
        f"{stack.url('reporter')}/api/v1/reports",
        json={"code": place.code, "category": category, "description": text},
        headers={"Idempotency-Key": str(uuid.uuid4())},
        timeout=10,
    )
    assert r.status_code == 202, r.text
    return str(r.json()["report_id"])
