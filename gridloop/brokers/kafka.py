"""Apache Kafka (KRaft) launcher: fetch the broker jars with Maven, run 1..n nodes on loopback.

Every node is a combined broker+controller (``process.roles=broker,controller``) with a static
controller quorum (``controller.quorum.voters``) on loopback ports. Data lives under
``data_dir/node-<i>/data``; the cluster id is kept in ``data_dir/cluster.json`` so a new
``KafkaCluster`` on the same ``data_dir`` restarts the same cluster with its data.

With ``sasl`` (``SaslListeners``) each node also has client listeners that want a SCRAM login:
SASL_PLAINTEXT, and SASL_SSL when given a PEM keystore; brokers and controllers keep PLAINTEXT
among themselves. The suite proves the clients' TLS and SASL settings against them.

Each JVM runs in its own session (process group); ``stop()`` signals the whole group, and on
Linux the JVM also gets SIGTERM when the Python process that started it dies (when it was started
from the main thread: the kernel ties that signal to the starting thread).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gridloop.brokers.ports import free_ports, port_open, wait_for_kafka
from gridloop.procs import Managed, signal_group, spawn, tail, terminate

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
POM_PATH = DEPLOY_DIR / "pom.xml"
LOG4J_CONFIG = DEPLOY_DIR / "log4j2.properties"
CACHE_ENV = "GRIDLOOP_KAFKA_CACHE"
JVM_OPTS_ENV = "GRIDLOOP_KAFKA_JVM_OPTS"
CDS_ENV = "GRIDLOOP_KAFKA_CDS"
MIN_JAVA = 17
_COMPLETE_MARKER = ".gridloop-complete"


# --------------------------------------------------------------------------- java + jars


def _java_candidates() -> Iterator[str]:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        yield str(Path(java_home) / "bin" / "java")
    on_path = shutil.which("java")
    if on_path:
        yield on_path


@functools.cache
def _java_version_text(java: str) -> str | None:
    """Return the output of `java -version`, or None if the binary does not run."""
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stderr + proc.stdout if proc.returncode == 0 else None


def _java_major(java: str) -> int | None:
    """Return the major version of a java binary, or None if it does not run."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', _java_version_text(java) or "")
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_x" style
        major = int(match.group(2))
    return major


def java_binary() -> str | None:
    """Return the path of a Java 17+ binary (JAVA_HOME first, then PATH), or None."""
    for java in _java_candidates():
        major = _java_major(java)
        if major is not None and major >= MIN_JAVA:
            return java
    return None


def java_available() -> bool:
    """Return True if Java 17+ is on PATH (or under JAVA_HOME)."""
    return java_binary() is not None


def kafka_available(cache_dir: Path | None = None) -> bool:
    """Return True if a broker can be launched: Java 17+, and the jars cached or Maven on PATH."""
    if not java_available() or not POM_PATH.is_file():
        return False
    base = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    digest = hashlib.sha256(POM_PATH.read_bytes()).hexdigest()
    return _libs_complete(base / "libs", digest) or shutil.which("mvn") is not None


def kafka_version(pom: Path = POM_PATH) -> str:
    """Return the Kafka version pinned in deploy/kafka/pom.xml."""
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom.read_text())
    if match is None:
        raise RuntimeError(f"{pom} has no <kafka.version> property")
    return match.group(1)


def _default_cache_dir() -> Path:
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "gridloop" / f"kafka-{kafka_version()}"


def ensure_kafka_jars(cache_dir: Path | None = None) -> Path:
    """Fetch the broker jars once via Maven into the cache; return the libs dir.

    The cache is cache_dir, else $GRIDLOOP_KAFKA_CACHE, else ~/.cache/gridloop/kafka-<version>;
    the jars land in its ``libs`` subdirectory. A change to pom.xml re-fetches. Concurrent callers
    serialise on a lock file, and the libs dir appears by an atomic rename only when complete.
    """
    if not POM_PATH.is_file():
        raise RuntimeError(f"Kafka Maven file not found: {POM_PATH}")
    base = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    libs = base / "libs"
    digest = hashlib.sha256(POM_PATH.read_bytes()).hexdigest()
    if _libs_complete(libs, digest):
        return libs
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _libs_complete(libs, digest):
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError(
                "Apache Kafka jars are not cached and Maven (mvn) is not on PATH: install Maven, "
                f"or fill {libs} from deploy/kafka/pom.xml, or use the Tansu broker"
            )
        tmp = base / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn, "-q", "-B", "-f", str(POM_PATH), "dependency:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={tmp}",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not any(tmp.glob("kafka_*.jar")):
            shutil.rmtree(tmp, ignore_errors=True)
            output = (proc.stdout + proc.stderr).strip()[-4000:]
            raise RuntimeError(f"fetching Kafka jars failed ({' '.join(cmd)}):\n{output}")
        (tmp / _COMPLETE_MARKER).write_text(digest)
        if libs.exists():
            old = base / f"libs.old-{os.getpid()}"
            libs.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(libs)
    return libs


def cds_archive_path(java: str, libs: Path) -> Path | None:
    """Return where the class-data-sharing archive for this JVM and these jars lives.

    None when disabled with GRIDLOOP_KAFKA_CDS=0. The archive (made by the first broker that
    exits cleanly) cuts JVM start-up by roughly a third; a stale one is ignored by the JVM.
    """
    if os.environ.get(CDS_ENV, "1") == "0":
        return None
    key = f"{os.path.realpath(java)}\n{_java_version_text(java)}\n{libs.resolve()}"
    return libs.parent / "cds" / f"kafka-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsa"


def _libs_complete(libs: Path, digest: str) -> bool:
    marker = libs / _COMPLETE_MARKER
    try:
        return marker.read_text().strip() == digest
    except OSError:
        return False


# --------------------------------------------------------------------------- client security

ScramMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True)
class BrokerTls:
    """The broker's TLS identity: a PEM file holding its private key (unencrypted PKCS#8) and its
    certificate chain, read by Kafka as a PEM keystore (``ssl.keystore.type=PEM``)."""

    keystore: Path
    advertised_host: str = "localhost"
    """The host clients are sent to for the SASL_SSL listener: a name the certificate carries."""


@dataclass(frozen=True)
class SaslListeners:
    """Client listeners with SASL/SCRAM next to the PLAINTEXT one (which brokers and the suite's
    readiness probe keep using): SASL_PLAINTEXT always, SASL_SSL too when `tls` is given.

    The SCRAM users are written into the metadata when a node's storage is formatted
    (``kafka-storage format --add-scram``), so they exist before the first client connects."""

    users: Mapping[str, str] = field(default_factory=dict)
    """User name -> password."""
    mechanism: ScramMechanism = "SCRAM-SHA-512"
    tls: BrokerTls | None = None

    def scram_arguments(self) -> list[str]:
        """The StorageTool arguments that create the users."""
        args: list[str] = []
        for name, password in sorted(self.users.items()):
            if re.search(r"[,\[\]=\s]", name + password):
                raise ValueError("SCRAM user names and passwords here may not hold , [ ] = or spaces")
            args += ["--add-scram", f"{self.mechanism}=[name={name},password={password}]"]
        return args


# --------------------------------------------------------------------------- cluster

_LIVE: weakref.WeakSet[KafkaCluster] = weakref.WeakSet()


@atexit.register
def _stop_live_clusters() -> None:
    for cluster in list(_LIVE):
        with contextlib.suppress(Exception):
            cluster.stop(timeout=15.0)


def new_cluster_id() -> str:
    """Return a random Kafka cluster id (22-character base64url UUID, as kafka-storage makes)."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value


class KafkaCluster(Managed):
    """A KRaft Apache Kafka cluster of combined broker+controller nodes on loopback ports.

    ports: one client port per broker, or client ports followed by controller ports
    (2 per broker); free ports are picked when omitted. Logs go to log_dir
    (default data_dir/logs): kafka-<i>.log (log4j) and kafka-<i>.out (JVM stdout/stderr).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        data_dir: Path,
        brokers: int = 1,
        ports: list[int] | None = None,
        log_dir: Path | None = None,
        heap: str = "512m",
        sasl: SaslListeners | None = None,
    ) -> None:
        if brokers < 1:
            raise ValueError("brokers must be >= 1")
        self.data_dir = Path(data_dir).resolve()
        self.brokers = brokers
        self.log_dir = Path(log_dir).resolve() if log_dir is not None else self.data_dir / "logs"
        self.heap = heap
        if ports is None:
            picked = free_ports(2 * brokers, self.host)
            self.client_ports, self.controller_ports = picked[:brokers], picked[brokers:]
        elif len(ports) == brokers:
            self.client_ports = list(ports)
            self.controller_ports = free_ports(brokers, self.host)
        elif len(ports) == 2 * brokers:
            self.client_ports, self.controller_ports = list(ports[:brokers]), list(ports[brokers:])
        else:
            raise ValueError(f"ports: give {brokers} client ports or {2 * brokers} (client+controller)")
        self.bootstrap_servers = ",".join(f"{self.host}:{p}" for p in self.client_ports)
        self.sasl = sasl
        self.sasl_ports = free_ports(brokers, self.host) if sasl is not None else []
        self.sasl_ssl_ports = free_ports(brokers, self.host) if sasl is not None and sasl.tls else []
        self.sasl_bootstrap_servers = ",".join(f"{self.host}:{p}" for p in self.sasl_ports)
        """The SASL_PLAINTEXT listeners (empty without `sasl`)."""
        tls_host = sasl.tls.advertised_host if sasl is not None and sasl.tls else self.host
        self.sasl_ssl_bootstrap_servers = ",".join(f"{tls_host}:{p}" for p in self.sasl_ssl_ports)
        """The SASL_SSL listeners, by the name the certificate carries (empty without TLS)."""
        self.replication_factor = min(brokers, 3)
        self.min_insync_replicas = 2 if brokers >= 3 else 1
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * brokers
        self._libs: Path | None = None
        self._java: str | None = None
        self._cds: Path | None = None
        self._cds_dump: tuple[int, Path] | None = None  # (node, temporary archive being written)
        self.cluster_id: str | None = None

    # ---- layout

    def node_dir(self, index: int) -> Path:
        """Return data_dir/node-<index> (holds server.properties and the data/ log dir)."""
        return self.data_dir / f"node-{index}"

    def node_bootstrap(self, index: int) -> str:
        """Return "127.0.0.1:<client port>" of one node."""
        return f"{self.host}:{self.client_ports[index]}"

    def pids(self) -> list[int]:
        """Return the process ids of the nodes that are running."""
        return [p.pid for p in self._procs if p is not None and p.poll() is None]

    def node_pid(self, index: int) -> int | None:
        """Return the process id of one node, None when it is not running."""
        proc = self._procs[index]
        return proc.pid if proc is not None and proc.poll() is None else None

    def is_running(self, index: int) -> bool:
        """Return True if node index has a live process."""
        proc = self._procs[index]
        return proc is not None and proc.poll() is None

    def _listeners(self, index: int) -> dict[str, object]:
        """The listener properties: PLAINTEXT and CONTROLLER, plus the SASL ones when asked for."""
        plain = f"PLAINTEXT://{self.host}:{self.client_ports[index]}"
        listeners = [plain, f"CONTROLLER://{self.host}:{self.controller_ports[index]}"]
        advertised = [plain]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        props: dict[str, object] = {}
        if self.sasl is not None:
            mechanism = self.sasl.mechanism
            named = [("SASL_PLAINTEXT", self.host, self.sasl_ports[index])]
            if self.sasl.tls is not None:
                named.append(("SASL_SSL", self.sasl.tls.advertised_host, self.sasl_ssl_ports[index]))
                props["ssl.keystore.type"] = "PEM"
                props["ssl.keystore.location"] = self.sasl.tls.keystore.resolve()
            for name, host, port in named:
                listeners.append(f"{name}://{self.host}:{port}")
                advertised.append(f"{name}://{host}:{port}")
                protocols.append(f"{name}:{name}")
                # brokers keep talking PLAINTEXT to each other: only clients log in
                props[f"listener.name.{name.lower()}.{mechanism.lower()}.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                )
            props["sasl.enabled.mechanisms"] = mechanism
        return {
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(protocols),
            **props,
        }

    def _server_properties(self, index: int) -> str:
        voters = ",".join(f"{i}@{self.host}:{port}" for i, port in enumerate(self.controller_ports))
        rf, isr = self.replication_factor, self.min_insync_replicas
        props = {
            "process.roles": "broker,controller",
            "node.id": index,
            "controller.quorum.voters": voters,
            **self._listeners(index),
            "log.dirs": self.node_dir(index) / "data",
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": 0,
            "num.partitions": 1,
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": 10,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "transaction.state.log.num.partitions": 10,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            # a crashed node is fenced (its partitions move, ISRs shrink) after 6 s, not 9 s
            "broker.session.timeout.ms": 6000,
            "broker.heartbeat.interval.ms": 1000,
            # a small machine: fewer threads, and no 128 MB log-cleaner buffer per node
            "num.network.threads": 2,
            "num.io.threads": 4,
            "background.threads": 4,
            "num.recovery.threads.per.data.dir": 1,
            "log.cleaner.dedupe.buffer.size": 32 * 1024 * 1024,
        }
        lines = [f"# written by gridloop.brokers.kafka for node {index}; regenerated on start"]
        lines += [f"{key}={value}" for key, value in props.items()]
        return "\n".join(lines) + "\n"

    def _jvm_command(self, index: int, main: list[str], cds: list[str] | None = None) -> list[str]:
        assert self._java is not None and self._libs is not None
        if cds is None:
            cds = self._cds_flags(index, dump=False)
        flags = [
            f"-Xmx{self.heap}",
            "-XX:+UseSerialGC",
            # C1 only: on 2 cores C2 compiler threads of 3 JVMs starve the brokers for minutes
            # (measured: 3-node start 10 s -> 5 s, and half the broker CPU per message)
            "-XX:TieredStopAtLevel=1",
            *cds,
            "-XX:+ExitOnOutOfMemoryError",
            "-XX:-UsePerfData",
            "-Djava.awt.headless=true",
            "-Dlog4j2.disableJmx=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.log_dir}",
            f"-Dgridloop.kafka.logfile={self.log_dir / f'kafka-{index}.log'}",
        ]
        flags += shlex.split(os.environ.get(JVM_OPTS_ENV, ""))
        return [self._java, *flags, "-cp", str(self._libs / "*"), *main]

    def _cds_flags(self, index: int, dump: bool) -> list[str]:
        """Use the CDS archive if present; else let one broker write it when it exits."""
        if self._cds is None:
            return []
        quiet = "-Xlog:cds*=off"
        if self._cds.exists():
            return [f"-XX:SharedArchiveFile={self._cds}", quiet]
        if not dump or self._cds_dump is not None:
            return []
        self._cds.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._cds.with_name(f"{self._cds.name}.tmp-{os.getpid()}-{index}")
        tmp.unlink(missing_ok=True)
        self._cds_dump = (index, tmp)
        return [f"-XX:ArchiveClassesAtExit={tmp}", quiet]

    def _finish_cds(self, index: int, returncode: int | None) -> None:
        """Publish the archive written by a cleanly stopped node; drop a partial one."""
        if self._cds_dump is None or self._cds_dump[0] != index or self._cds is None:
            return
        tmp = self._cds_dump[1]
        self._cds_dump = None
        if returncode in (0, 143, -signal.SIGTERM) and tmp.exists() and tmp.stat().st_size > 0:
            os.replace(tmp, self._cds)
        else:
            tmp.unlink(missing_ok=True)

    def _prepare(self) -> None:
        """Find java and the jars, settle the cluster id, write configs, format new nodes."""
        if self._java is None:
            self._java = java_binary()
            if self._java is None:
                raise RuntimeError(f"Apache Kafka needs Java {MIN_JAVA}+ on PATH or JAVA_HOME")
        if self._libs is None:
            self._libs = ensure_kafka_jars()
            self._cds = cds_archive_path(self._java, self._libs)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        meta_path = self.data_dir / "cluster.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if int(meta["brokers"]) != self.brokers:
                raise ValueError(
                    f"{self.data_dir} holds a {meta['brokers']}-node Kafka cluster, "
                    f"not {self.brokers}; use another data dir or delete it"
                )
        else:
            meta = {"cluster_id": new_cluster_id(), "brokers": self.brokers}
            tmp = meta_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(meta, indent=2) + "\n")
            tmp.replace(meta_path)
        self.cluster_id = str(meta["cluster_id"])
        for index in range(self.brokers):
            self.node_dir(index).mkdir(parents=True, exist_ok=True)
            (self.node_dir(index) / "server.properties").write_text(self._server_properties(index))
        self._format([i for i in range(self.brokers) if not self._formatted(i)])

    def _formatted(self, index: int) -> bool:
        return (self.node_dir(index) / "data" / "meta.properties").exists()

    def _format(self, indices: list[int]) -> None:
        """Format the storage of new nodes (kafka.tools.StorageTool), in parallel."""
        assert self.cluster_id is not None
        running: list[tuple[int, subprocess.Popen[bytes], Path]] = []
        for index in indices:
            out = self.log_dir / f"kafka-{index}-format.out"
            out.unlink(missing_ok=True)
            props = self.node_dir(index) / "server.properties"
            main = ["kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(props)]
            if self.sasl is not None:
                main += self.sasl.scram_arguments()
            running.append((index, spawn(self._jvm_command(index, main), out), out))
        failed: list[str] = []
        try:
            for index, proc, out in running:
                if proc.wait(timeout=120) != 0:
                    failed.append(f"node {index}:\n{tail(out)}")
        finally:
            terminate([proc for _, proc, _ in running], timeout=1.0)
        if failed:
            raise RuntimeError("formatting Kafka storage failed: " + "\n".join(failed))

    # ---- lifecycle

    def _launch(self, index: int) -> None:
        if self.is_running(index):
            return
        ports = [self.client_ports[index], self.controller_ports[index]]
        ports += [p[index] for p in (self.sasl_ports, self.sasl_ssl_ports) if p]
        for port in ports:
            if port_open(self.host, port, timeout=0.2):
                raise RuntimeError(f"Kafka node {index}: port {port} is already in use")
        props = self.node_dir(index) / "server.properties"
        cds = self._cds_flags(index, dump=True)
        cmd = self._jvm_command(index, ["kafka.Kafka", str(props)], cds)
        self._procs[index] = spawn(cmd, self.log_dir / f"kafka-{index}.out", cwd=self.node_dir(index))
        _LIVE.add(self)

    def _check_alive(self, indices: list[int]) -> None:
        for index in indices:
            proc = self._procs[index]
            if proc is not None and proc.poll() is not None:
                out = tail(self.log_dir / f"kafka-{index}.out")
                errors = tail(self.log_dir / f"kafka-{index}.log", 15, r"ERROR|FATAL|Exception")
                raise RuntimeError(
                    f"Kafka node {index} exited with code {proc.returncode} during start-up "
                    f"(logs in {self.log_dir}).\n{errors}\n{out}".rstrip()
                )

    def start(self, timeout: float = 90.0) -> None:
        """Format new nodes, launch every node, wait until each lists all brokers."""
        deadline = time.monotonic() + timeout
        self._prepare()
        indices = list(range(self.brokers))
        try:
            for index in indices:
                self._launch(index)
            wait_for_kafka(
                self.bootstrap_servers,
                max(1.0, deadline - time.monotonic()),
                expect_brokers=self.brokers,
                every_server=True,
                check=lambda: self._check_alive(indices),
            )
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every node, SIGKILL after timeout; idempotent."""
        procs = [p for p in self._procs if p is not None]
        terminate(procs, timeout)
        for index, proc in enumerate(self._procs):
            if proc is not None:
                self._finish_cds(index, proc.returncode)
        self._procs = [None] * self.brokers
        _LIVE.discard(self)

    def kill_node(self, index: int) -> None:
        """Kill one node with SIGKILL (a crash, for fault tests)."""
        proc = self._procs[index]
        if proc is not None:
            signal_group(proc, signal.SIGKILL)
            proc.wait()
            self._finish_cds(index, proc.returncode)
            self._procs[index] = None

    def start_node(self, index: int, timeout: float = 60.0) -> None:
        """Start one stopped node again; wait until it lists all brokers."""
        if self._java is None or self._libs is None or self.cluster_id is None:
            self._prepare()
        self._launch(index)
        wait_for_kafka(
            self.node_bootstrap(index),
            timeout,
            expect_brokers=self.brokers,
            check=lambda: self._check_alive([index]),
        )

    def __repr__(self) -> str:
        return f"KafkaCluster({self.data_dir}, brokers={self.brokers}, {self.bootstrap_servers})"
