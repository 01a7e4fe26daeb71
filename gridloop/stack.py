"""The embedded stack: a broker, topics, migrated databases, demo data and the three services."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from gridloop import migrate
from gridloop.brokers.kafka import KafkaCluster, kafka_available
from gridloop.brokers.ports import free_port, wait_for_kafka
from gridloop.brokers.tansu import TansuBroker
from gridloop.procs import spawn, tail, terminate
from gridloop.settings import SERVICES, Settings
from gridloop.topics import ensure_topics
from schemas.reference import Jurisdiction, load_jurisdiction

log = logging.getLogger(__name__)
BrokerChoice = Literal["auto", "kafka", "tansu", "external"]


def isolated_settings(var_dir: Path, bootstrap: str, prefix: str = "", **extra: Any) -> Settings:
    """Settings for a stack of its own (tests, benchmarks): own var dir, free ports, own topic prefix."""
    ports: dict[str, Any] = {f"{s}_port": free_port() for s in SERVICES}
    values: dict[str, Any] = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "var_dir": var_dir,
        "topic_prefix": prefix,
        "public_base_url": f"http://127.0.0.1:{ports['reporter_port']}",
        "session_timeout_ms": 6000,
        **ports,
        **extra,
    }
    return Settings(**values)


def _port_or_free(preferred: int) -> int:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


DemoLoader = Callable[[Settings, Jurisdiction], object]
"""Loads demo rows into the migrated databases (`gridloop.cli.load_demo`: each service's own)."""


@dataclass
class Stack:
    """Starts and stops everything `gridloop up` runs; tests use it with their own settings."""

    settings: Settings
    broker: BrokerChoice = "auto"
    demo: DemoLoader | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    kafka: KafkaCluster | None = None
    tansu: TansuBroker | None = None
    bootstrap_servers: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    jurisdiction: Jurisdiction | None = None
    broker_kind: str = ""

    def __post_init__(self) -> None:
        # demo accounts share a published password: a stack that loads them is a dev stack (SECURITY.md)
        if self.demo is not None and not self.settings.dev_mode:
            self.settings = self.settings.model_copy(update={"dev_mode": True})

    @property
    def var_dir(self) -> Path:
        """Where this stack keeps its data and logs."""
        return self.settings.var_dir

    @property
    def log_dir(self) -> Path:
        """Service and broker logs."""
        return self.var_dir / "logs"

    def choose_broker(self) -> str:
        """external when KAFKA_BOOTSTRAP_SERVERS is set, else Apache Kafka with Java, else Tansu."""
        if self.broker != "auto":
            return self.broker
        if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            return "external"
        return "kafka" if kafka_available() else "tansu"

    def start_broker(self) -> str:
        """Start (or locate) the broker and return its bootstrap servers."""
        kind = self.broker_kind = self.choose_broker()
        if kind == "external":
            self.bootstrap_servers = self.settings.kafka_bootstrap_servers
            wait_for_kafka(self.bootstrap_servers, timeout=30)
        elif kind == "kafka":
            self.kafka = KafkaCluster(
                self.var_dir / "kafka", brokers=1, ports=self._kafka_ports(), log_dir=self.log_dir
            )
            self.kafka.start()
            self.bootstrap_servers = self.kafka.bootstrap_servers
        else:
            self.tansu = TansuBroker(port=_port_or_free(9092), log_path=self.log_dir / "tansu.log")
            self.tansu.start()
            self.bootstrap_servers = self.tansu.bootstrap_servers
        return self.bootstrap_servers

    def _kafka_ports(self) -> list[int] | None:
        # keep the ports of the last run, so a restarted broker is where clients expect it
        saved = self.var_dir / "kafka" / "ports"
        if saved.exists():
            ports = [int(p) for p in saved.read_text().split()]
            if all(_port_or_free(p) == p for p in ports):
                return ports
        ports = [_port_or_free(9092), free_port()]
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(" ".join(map(str, ports)))
        return ports

    def prepare(self) -> None:
        """Create topics, migrate the three databases and load the demo data."""
        ensure_topics(
            self.bootstrap_servers,
            self.settings.topic_partitions,
            self.settings.topic_replication,
            prefix=self.settings.topic_prefix,
        )
        for service in SERVICES:
            migrate.upgrade(service, self.settings.db_url(service))
        self.jurisdiction = load_jurisdiction(self.settings.jurisdiction_dir)
        if self.demo:
            self.demo(self.settings, self.jurisdiction)

    def service_env(self, service: str) -> dict[str, str]:
        """The environment of one service process."""
        env = dict(os.environ)
        env.pop("DATABASE_URL", None)
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
                "DATABASE_URL": self.settings.db_url(service),
                "GRIDLOOP_VAR_DIR": str(self.var_dir),
                "GRIDLOOP_REPORTER_PORT": str(self.settings.reporter_port),
                "GRIDLOOP_ROUTER_PORT": str(self.settings.router_port),
                "GRIDLOOP_CLOSER_PORT": str(self.settings.closer_port),
                "GRIDLOOP_HOST": self.settings.host,
                # the stack's own choice, so a service never disagrees with the stack that checked it
                "GRIDLOOP_DEV": "1" if self.settings.dev_mode else "0",
                "GRIDLOOP_COOKIE_SECURE": "true" if self.settings.cookie_secure else "false",
                "GRIDLOOP_PUBLIC_BASE_URL": self.settings.public_base_url,
                "GRIDLOOP_JURISDICTION_DIR": str(self.settings.jurisdiction_dir),
                "GRIDLOOP_REDRIVE_AFTER_SECONDS": str(self.settings.redrive_after_seconds),
                "GRIDLOOP_TOPIC_PREFIX": self.settings.topic_prefix,
                "GRIDLOOP_LAG_SOURCE": "highwater"
                if self.broker_kind == "tansu"
                else self.settings.lag_source,
                "GRIDLOOP_LAG_INTERVAL_SECONDS": str(self.settings.lag_interval_seconds),
                # Apache Kafka has the idempotent producer, Tansu refuses it; an external broker: as told
                "GRIDLOOP_KAFKA_IDEMPOTENCE": {"kafka": "true", "tansu": "false"}.get(
                    self.broker_kind, str(self.settings.kafka_idempotence).lower()
                ),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start_service(self, service: str) -> None:
        """Start one service as its own process (logs under var/logs)."""
        cmd = [sys.executable, "-m", "gridloop.cli", service]
        self.procs[service] = spawn(cmd, self.log_dir / f"{service}.log", env=self.service_env(service))

    def url(self, service: str) -> str:
        """Base URL of a service."""
        return f"http://{self.settings.host}:{self.settings.port(service)}"

    def wait_ready(self, services: tuple[str, ...] = SERVICES, timeout: float = 60.0) -> None:
        """Wait until each service answers /readyz with 200."""
        deadline = time.monotonic() + timeout
        pending = list(services)
        while pending:
            service = pending[0]
            proc = self.procs.get(service)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"{service} exited with {proc.returncode}:\n{tail(self.log_dir / f'{service}.log', 30)}"
                )
            try:
                if httpx.get(self.url(service) + "/readyz", timeout=2).status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{service} not ready after {timeout:.0f}s:\n{tail(self.log_dir / f'{service}.log', 30)}"
                )
            time.sleep(0.2)

    def start(self) -> None:
        """Bring the whole stack up and wait until it is ready."""
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.start_broker()
        self.prepare()
        for service in SERVICES:
            self.start_service(service)
        self.wait_ready()

    def kill(self, service: str) -> None:
        """kill -9 one service (fault tests)."""
        proc = self.procs.pop(service)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def restart(self, service: str) -> None:
        """Start a killed or stopped service again and wait for it."""
        self.start_service(service)
        self.wait_ready((service,))

    def stop_services(self) -> None:
        """Stop the three services."""
        terminate(list(self.procs.values()), timeout=15)
        self.procs.clear()

    def stop(self) -> None:
        """Stop everything this stack started, services first."""
        self.stop_services()
        if self.tansu is not None:
            self.tansu.stop()
            self.tansu = None
        if self.kafka is not None:
            self.kafka.stop()
            self.kafka = None
