"""The embedded stack: brokers, topics, migrated databases, demo data, the three services and their entries.

The default is the development shape: one broker, a SQLite file per service, one process each on
its usual port. The production shape on one machine (`gridloop up --brokers 3 --database postgres
--replicas 2`): a KRaft cluster of N brokers (topics with RF min(N, 3), `min.insync.replicas` 2 from
3 brokers on), PostgreSQL with a database per service (given, or embedded under var/), and R
replicas of each service on ports of their own behind one entry per service on the service's usual
port (`gridloop/proxy.py`, one process for the three entries). `replicas_of` overrides the count
for some services (the scale-out benchmark runs 1 or 2 routers and closers behind the same entries).
Links between services and the public URLs point at the entries."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from gridloop import embedded_pg, migrate
from gridloop.brokers.kafka import KafkaCluster, kafka_available
from gridloop.brokers.ports import free_port, free_ports, wait_for_kafka
from gridloop.brokers.tansu import TansuBroker
from gridloop.db import ensure_database
from gridloop.embedded_pg import EmbeddedPostgres
from gridloop.kafkaauth import PLAINTEXT, KafkaSecurity, wait_for_login
from gridloop.procs import spawn, tail, terminate
from gridloop.settings import SERVICES, Settings
from gridloop.topics import ensure_topics
from schemas.reference import Jurisdiction, load_jurisdiction

log = logging.getLogger(__name__)
BrokerChoice = Literal["auto", "kafka", "tansu", "external"]
DatabaseChoice = Literal["sqlite", "postgres"]
PROXY = "proxy"
"""The name of the entry proxy's process in `Stack.procs`."""
LOOPBACK = "127.0.0.1"
KAFKA_SECURITY_PREFIXES = ("GRIDLOOP_KAFKA_SECURITY_", "GRIDLOOP_KAFKA_SASL_", "GRIDLOOP_KAFKA_SSL_")


class StackConfigError(ValueError):
    """A shape the stack refuses to start (the message says why and what to do instead)."""


def shape_problems(
    database: DatabaseChoice,
    database_url: str | None,
    brokers: int,
    replicas: int,
    broker: BrokerChoice,
    urls: list[str],
    replicas_of: Mapping[str, int] | None = None,
) -> list[str]:
    """Why a requested shape cannot run, one sentence each (empty: it can). `urls`: the services'
    database URLs as the settings give them (what "sqlite" keeps); `replicas_of`: per-service
    overrides of `replicas`."""
    problems: list[str] = []
    overrides = dict(replicas_of or {})
    unknown = sorted(set(overrides) - set(SERVICES))
    if unknown:
        problems.append(
            f"replicas_of names no service: {', '.join(unknown)} (services: {', '.join(SERVICES)})"
        )
    counts = [replicas, *overrides.values()]
    if brokers < 1 or min(counts) < 1:
        problems.append("--brokers and --replicas must be at least 1")
    most = max(counts)
    if brokers > 1 and broker in ("tansu", "external"):
        problems.append(
            f"--brokers {brokers} starts an Apache Kafka cluster; it cannot be the {broker} broker"
        )
    if database_url and database != "postgres":
        problems.append("--database-url is a PostgreSQL server: use it with --database postgres")
    if database == "sqlite" and most > 1 and any(u.startswith("sqlite") for u in urls):
        problems.append(
            f"--replicas {most} needs --database postgres: SQLite is one writer in one process, "
            "so replicas of a service cannot share its file"
        )
    return problems


def isolated_settings(var_dir: Path, bootstrap: str, prefix: str = "", **extra: Any) -> Settings:
    """Settings for a stack of its own (tests, benchmarks): own var dir, free ports, own topic prefix."""
    ports: dict[str, Any] = {f"{s}_port": free_port() for s in SERVICES}
    values: dict[str, Any] = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "var_dir": var_dir,
        "topic_prefix": prefix,
        "public_base_url": f"http://127.0.0.1:{ports['reporter_port']}",
        "closer_public_url": f"http://127.0.0.1:{ports['closer_port']}",
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
    """Starts and stops everything `gridloop up` runs; tests use it with their own settings.

    database "sqlite" keeps the settings' database URLs (SQLite files under var/ unless they name
    others); "postgres" gives each service a database of its own (`gridloop_<service>`, created when
    absent) on `database_url`, or on an embedded server under var/postgres when none is given."""

    settings: Settings
    broker: BrokerChoice = "auto"
    demo: DemoLoader | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    brokers: int = 1
    database: DatabaseChoice = "sqlite"
    database_url: str | None = None
    replicas: int = 1
    replicas_of: dict[str, int] = field(default_factory=dict)
    """Replicas of some services other than `replicas` (e.g. {"router": 1, "closer": 1})."""
    database_prefix: str = "gridloop_"
    kafka: KafkaCluster | None = None
    tansu: TansuBroker | None = None
    bootstrap_servers: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    jurisdiction: Jurisdiction | None = None
    broker_kind: str = ""
    postgres: EmbeddedPostgres | None = None
    postgres_url: str = ""
    """The PostgreSQL server the services' databases are on (empty on SQLite)."""
    replica_ports: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # demo accounts share a published password: a stack that loads them is a dev stack (SECURITY.md)
        if self.demo is not None and not self.settings.dev_mode:
            self.settings = self.settings.model_copy(update={"dev_mode": True})
        urls = [self.settings.db_url(s) for s in SERVICES]
        problems = shape_problems(
            self.database, self.database_url, self.brokers, self.replicas, self.broker, urls, self.replicas_of
        )
        if self.database == "postgres" and not self.database_url and not embedded_pg.embedded_available():
            problems.append(embedded_pg.MISSING)
        if problems:
            raise StackConfigError("; ".join(problems))
        if self.proxied:
            # each replica on a loopback port of its own; the entries keep the services' usual ports
            self.replica_ports = {s: free_ports(self.replica_count(s)) for s in SERVICES}

    @property
    def var_dir(self) -> Path:
        """Where this stack keeps its data and logs."""
        return self.settings.var_dir

    @property
    def log_dir(self) -> Path:
        """Service and broker logs."""
        return self.var_dir / "logs"

    def replica_count(self, service: str) -> int:
        """How many processes run the service: its `replicas_of` entry, else `replicas`."""
        return self.replicas_of.get(service, self.replicas)

    @property
    def proxied(self) -> bool:
        """Whether the services run behind entries (some service has replicas; then every service
        does, one replica or more), else each is its one process on its usual port."""
        return any(self.replica_count(s) > 1 for s in SERVICES)

    def choose_broker(self) -> str:
        """external when KAFKA_BOOTSTRAP_SERVERS is set, else Apache Kafka with Java, else Tansu;
        always Apache Kafka for a cluster of several brokers."""
        if self.broker != "auto":
            return self.broker
        if self.brokers > 1:
            return "kafka"
        if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            return "external"
        return "kafka" if kafka_available() else "tansu"

    def start_broker(self) -> str:
        """Start (or locate) the broker and return its bootstrap servers."""
        kind = self.broker_kind = self.choose_broker()
        if kind == "external":
            self.bootstrap_servers = self.settings.kafka_bootstrap_servers
            security = self.kafka_security
            if security.protocol == "PLAINTEXT":
                wait_for_kafka(self.bootstrap_servers, timeout=30)
            else:  # the bare Metadata probe would be dropped by a TLS or SASL listener
                wait_for_login(self.bootstrap_servers, security, timeout=30)
        elif kind == "kafka":
            data_dir = self.var_dir / ("kafka" if self.brokers == 1 else f"kafka-{self.brokers}")
            self.kafka = KafkaCluster(
                data_dir, brokers=self.brokers, ports=self._kafka_ports(data_dir), log_dir=self.log_dir
            )
            self.kafka.start()
            self.bootstrap_servers = self.kafka.bootstrap_servers
        else:
            self.tansu = TansuBroker(port=_port_or_free(9092), log_path=self.log_dir / "tansu.log")
            self.tansu.start()
            self.bootstrap_servers = self.tansu.bootstrap_servers
        return self.bootstrap_servers

    def _kafka_ports(self, data_dir: Path) -> list[int] | None:
        # keep the ports of the last run, so a restarted broker is where clients expect it
        saved = data_dir / "ports"
        if saved.exists():
            ports = [int(p) for p in saved.read_text().split()]
            if len(ports) == 2 * self.brokers and all(_port_or_free(p) == p for p in ports):
                return ports
        first = _port_or_free(9092)
        ports = [first, *(p for p in free_ports(2 * self.brokers) if p != first)][: 2 * self.brokers]
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(" ".join(map(str, ports)))
        return ports

    def start_database(self) -> None:
        """PostgreSQL: the server (given or embedded) and a database per service in the settings."""
        if self.database != "postgres":
            return
        if self.database_url:
            self.postgres_url = self.database_url
        else:
            self.postgres = EmbeddedPostgres(self.var_dir / "postgres")
            self.postgres_url = self.postgres.start()
        urls = {
            f"{s}_database_url": ensure_database(self.postgres_url, f"{self.database_prefix}{s}")
            for s in SERVICES
        }
        self.settings = self.settings.model_copy(update=urls)

    @property
    def kafka_security(self) -> KafkaSecurity:
        """How the stack and its services connect to the broker: the settings' TLS and SASL for an
        external one, plaintext for a broker the stack started (they listen on loopback only)."""
        if self.broker_kind == "external":
            return KafkaSecurity.from_settings(self.settings)
        return PLAINTEXT

    def kafka_env(self) -> dict[str, str]:
        """The GRIDLOOP_KAFKA_* security variables of the services (none set: plaintext)."""
        if self.broker_kind != "external":
            return {"GRIDLOOP_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
        s = self.settings
        values = {
            "GRIDLOOP_KAFKA_SECURITY_PROTOCOL": s.kafka_security_protocol,
            "GRIDLOOP_KAFKA_SASL_MECHANISM": s.kafka_sasl_mechanism,
            "GRIDLOOP_KAFKA_SASL_USERNAME": s.kafka_sasl_username,
            "GRIDLOOP_KAFKA_SASL_PASSWORD": s.kafka_sasl_password.get_secret_value()
            if s.kafka_sasl_password is not None
            else None,
            "GRIDLOOP_KAFKA_SSL_CAFILE": s.kafka_ssl_cafile,
            "GRIDLOOP_KAFKA_SSL_CERTFILE": s.kafka_ssl_certfile,
            "GRIDLOOP_KAFKA_SSL_KEYFILE": s.kafka_ssl_keyfile,
            "GRIDLOOP_KAFKA_SSL_CHECK_HOSTNAME": str(s.kafka_ssl_check_hostname).lower(),
        }
        return {name: str(value) for name, value in values.items() if value is not None}

    @property
    def topic_replication(self) -> int:
        """Copies of each partition: min(brokers, 3) on a cluster the stack started, else the setting."""
        return self.kafka.replication_factor if self.kafka is not None else self.settings.topic_replication

    def prepare(self) -> None:
        """Create topics, migrate the three databases and load the demo data."""
        ensure_topics(
            self.bootstrap_servers,
            self.settings.topic_partitions,
            self.topic_replication,
            prefix=self.settings.topic_prefix,
            security=self.kafka_security,
        )
        for service in SERVICES:
            migrate.upgrade(service, self.settings.db_url(service), secret=self.settings.signing_key())
        self.jurisdiction = load_jurisdiction(self.settings.jurisdiction_dir)
        if self.demo:
            self.demo(self.settings, self.jurisdiction)

    def service_env(self, service: str) -> dict[str, str]:
        """The environment of one service process."""
        env = dict(os.environ)
        env.pop("DATABASE_URL", None)
        for name in [n for n in env if n.startswith(KAFKA_SECURITY_PREFIXES)]:
            del env[name]  # the stack's own choice below, never an inherited half of another
        env.update(self.kafka_env())
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
                "DATABASE_URL": self.settings.db_url(service),
                "GRIDLOOP_VAR_DIR": str(self.var_dir),
                "GRIDLOOP_REPORTER_PORT": str(self.settings.reporter_port),
                "GRIDLOOP_ROUTER_PORT": str(self.settings.router_port),
                "GRIDLOOP_CLOSER_PORT": str(self.settings.closer_port),
                "GRIDLOOP_NOTIFIER_PORT": str(self.settings.notifier_port),
                "GRIDLOOP_HOST": self.settings.host,
                # the stack's own choice, so a service never disagrees with the stack that checked it
                "GRIDLOOP_DEV": "1" if self.settings.dev_mode else "0",
                "GRIDLOOP_COOKIE_SECURE": "true" if self.settings.cookie_secure else "false",
                "GRIDLOOP_PUBLIC_BASE_URL": self.settings.public_base_url,
                "GRIDLOOP_CLOSER_PUBLIC_URL": self.settings.closer_public_url,
                # the closer's console calls the notifier here: the entry, so any replica answers
                "GRIDLOOP_NOTIFIER_URL": self.url("notifier"),
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
        if self.proxied:
            # the entry proxy connects from loopback: its X-Forwarded-For names the client
            trusted = [self.settings.trusted_proxies, f"{LOOPBACK}/32"]
            env["GRIDLOOP_TRUSTED_PROXIES"] = ",".join(t for t in trusted if t)
        env.update(self.extra_env)
        return env

    def proc_name(self, service: str, index: int = 0) -> str:
        """The key of one process in `procs`: the service's name, or `<service>-<i>` with replicas
        ("proxy" for the entry proxy)."""
        return f"{service}-{index}" if self.proxied and service != PROXY else service

    def service_command(self, service: str, index: int = 0) -> list[str]:
        """The command line of one replica (on its own loopback port when there are several)."""
        cmd = [sys.executable, "-m", "gridloop.cli", service]
        if self.proxied:
            cmd += ["--host", LOOPBACK, "--port", str(self.replica_ports[service][index])]
        return cmd

    def start_service(self, service: str, index: int = 0) -> None:
        """Start one replica of a service as its own process (logs under var/logs)."""
        name = self.proc_name(service, index)
        cmd = self.service_command(service, index)
        self.procs[name] = spawn(cmd, self.log_dir / f"{name}.log", env=self.service_env(service))

    def proxy_command(self) -> list[str]:
        """The entry proxy's command line: each service's usual port in front of its replicas."""
        cmd = [sys.executable, "-m", "gridloop.cli", "proxy"]
        for service in SERVICES:
            backends = ",".join(f"{LOOPBACK}:{port}" for port in self.replica_ports[service])
            cmd += ["--entry", f"{self.settings.host}:{self.settings.port(service)}={backends}"]
        return cmd

    def start_proxy(self) -> None:
        """Start the entry proxy: the services' usual ports in front of their replicas."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        self.procs[PROXY] = spawn(self.proxy_command(), self.log_dir / "proxy.log", env=env)

    def url(self, service: str) -> str:
        """Base URL of a service: its entry (the proxy with replicas, else the one process)."""
        return f"http://{self.settings.host}:{self.settings.port(service)}"

    def replica_url(self, service: str, index: int = 0) -> str:
        """Base URL of one replica (the service's own URL when it has one process)."""
        if not self.proxied:
            return self.url(service)
        return f"http://{LOOPBACK}:{self.replica_ports[service][index]}"

    def replica_pid(self, service: str, index: int = 0) -> int | None:
        """The process id of one replica, None when it is not running."""
        proc = self.procs.get(self.proc_name(service, index))
        return proc.pid if proc is not None and proc.poll() is None else None

    def _targets(self, services: tuple[str, ...], indices: tuple[int, ...] | None) -> list[tuple[str, str]]:
        """(process name, base URL) to wait for: the replicas, then the entries in front of them."""
        targets = [
            (self.proc_name(s, i), self.replica_url(s, i))
            for s in services
            for i in (indices if indices is not None else range(self.replica_count(s)))
        ]
        if self.proxied:
            targets += [(PROXY, self.url(s)) for s in services]
        return targets

    def wait_ready(
        self,
        services: tuple[str, ...] = SERVICES,
        timeout: float = 60.0,
        indices: tuple[int, ...] | None = None,
    ) -> None:
        """Wait until each replica (all, or `indices`) and each entry answers /readyz with 200."""
        deadline = time.monotonic() + timeout
        pending = self._targets(services, indices)
        while pending:
            name, url = pending[0]
            log_path = self.log_dir / f"{name}.log"
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail(log_path, 30)}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not ready after {timeout:.0f}s:\n{tail(log_path, 30)}")
            time.sleep(0.2)

    def start(self) -> None:
        """Bring the whole stack up and wait until it is ready."""
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.start_broker()
        self.start_database()
        self.prepare()
        for service in SERVICES:
            for index in range(self.replica_count(service)):
                self.start_service(service, index)
        if self.proxied:
            self.start_proxy()
        self.wait_ready()

    def kill(self, service: str, index: int = 0) -> None:
        """kill -9 one replica of a service, or the entry proxy (fault tests); an entry goes on with
        the other replicas."""
        proc = self.procs.pop(self.proc_name(service, index))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def restart(self, service: str, index: int = 0) -> None:
        """Start a killed or stopped replica again (same port) and wait for it."""
        if service == PROXY:
            self.start_proxy()
            self.wait_ready(indices=())
            return
        self.start_service(service, index)
        self.wait_ready((service,), indices=(index,))

    def exited(self) -> list[tuple[str, int]]:
        """(service or "proxy", replica index) of every process of the stack that has exited."""
        found: list[tuple[str, int]] = []
        for service in SERVICES:
            for index in range(self.replica_count(service)):
                proc = self.procs.get(self.proc_name(service, index))
                if proc is not None and proc.poll() is not None:
                    found.append((service, index))
        proxy = self.procs.get(PROXY)
        if proxy is not None and proxy.poll() is not None:
            found.append((PROXY, 0))
        return found

    def stop_services(self) -> None:
        """Stop the entry proxy and every replica."""
        terminate(list(self.procs.values()), timeout=15)
        self.procs.clear()

    def stop(self) -> None:
        """Stop everything this stack started: services first, then brokers, then PostgreSQL."""
        self.stop_services()
        if self.tansu is not None:
            self.tansu.stop()
            self.tansu = None
        if self.kafka is not None:
            self.kafka.stop()
            self.kafka = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
