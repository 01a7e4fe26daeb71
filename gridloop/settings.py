"""Process settings: environment variables with the GRIDLOOP_ prefix, plus the two standard names."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gridloop.net import IPNetwork, parse_networks

REPO_ROOT = Path(__file__).resolve().parents[1]
ServiceName = Literal["reporter", "router", "closer", "notifier"]
SERVICES: tuple[ServiceName, ...] = ("reporter", "router", "closer", "notifier")
DEFAULT_PORTS: dict[str, int] = {"reporter": 8001, "router": 8002, "closer": 8003, "notifier": 8004}


class Settings(BaseSettings):
    """Everything a GridLoop process can be told from its environment."""

    model_config = SettingsConfigDict(env_prefix="GRIDLOOP_", extra="ignore", populate_by_name=True)

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "GRIDLOOP_KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers, comma separated.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How every Kafka client connects: TLS (SSL), a SASL login, both (SASL_SSL) or neither.",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] | None = Field(
        None, description="SASL mechanism (SASL_* protocols only)."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user (SASL_* protocols only).")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (SASL_* protocols only).")
    kafka_ssl_cafile: Path | None = Field(
        None,
        description="PEM CA certificates that brokers' certificates must chain to (default: the system's).",
    )
    kafka_ssl_certfile: Path | None = Field(
        None, description="PEM client certificate (mutual TLS), optional."
    )
    kafka_ssl_keyfile: Path | None = Field(None, description="PEM key of the client certificate, optional.")
    kafka_ssl_check_hostname: bool = Field(
        True, description="Check that a broker's certificate names the host connected to (off: dev only)."
    )
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "GRIDLOOP_DATABASE_URL"),
        description="This service's database; default: a SQLite file per service under var/.",
    )
    reporter_database_url: str | None = Field(None, description="The reporter's database.")
    router_database_url: str | None = Field(None, description="The router's database.")
    closer_database_url: str | None = Field(None, description="The closer's database.")
    notifier_database_url: str | None = Field(None, description="The notifier's database.")
    var_dir: Path = Field(REPO_ROOT / "var", description="Where SQLite files, broker data and logs live.")
    host: str = Field("127.0.0.1", description="Address the HTTP services bind to.")
    reporter_port: int = 8001
    router_port: int = 8002
    closer_port: int = 8003
    notifier_port: int = 8004
    public_base_url: str = Field(
        "http://127.0.0.1:8001", description="Public URL of the reporter; QR codes point here."
    )
    closer_public_url: str = Field("http://127.0.0.1:8003", description="Public URL of the closer.")
    notifier_url: str | None = Field(
        None,
        description="Where the closer reaches the notifier's API (the console's 通知 page); default "
        "http://127.0.0.1:<notifier_port>. With replicas: the notifier's entry (proxy or service).",
    )
    jurisdiction_dir: Path = Field(
        REPO_ROOT / "data" / "jurisdictions", description="Reference data: grids, stations, categories."
    )
    jwt_secret: str | None = Field(
        None, description="Signing key for staff tokens (default: var/jwt.secret)."
    )
    dev_mode: bool = Field(
        False,
        validation_alias=AliasChoices("GRIDLOOP_DEV", "GRIDLOOP_DEV_MODE"),
        description="Development: unsafe settings (known secrets, demo accounts, http) only warn.",
    )
    cookie_secure: bool = Field(True, description="Mark session and rider cookies Secure (https only).")
    trusted_proxies: str = Field(
        "",
        description="CIDRs of our reverse proxies (comma-separated); only their X-Forwarded-For is believed.",
    )
    token_ttl_seconds: int = Field(8 * 3600, description="Lifetime of a staff bearer token.")
    topic_prefix: str = Field(
        "", description="Prepended to every topic name (several deployments or test runs on one cluster)."
    )
    topic_partitions: int = Field(6, description="Partitions per topic created by `gridloop topics`.")
    topic_replication: int = Field(1, description="Replication factor of created topics.")
    topic_wait_brokers: int = Field(
        0, description="Live brokers `gridloop topics` waits for before it creates (0: the replication)."
    )
    topic_wait_seconds: float = Field(
        120.0, description="How long `gridloop topics` waits for the brokers before it gives up (exit 1)."
    )
    consumer_max_records: int = Field(500, description="Most records a consumer applies in one transaction.")
    fetch_max_wait_ms: int = Field(50, description="Consumer fetch wait; every hop may add this much.")
    fetch_min_bytes: int = Field(
        32768, description="Bytes a fetch waits for (up to fetch_max_wait_ms): larger batches under load."
    )
    session_timeout_ms: int = Field(10_000, description="Consumer group session timeout.")
    deadletter_attempts: int = Field(3, description="Attempts before a message goes to `deadletter`.")
    outbox_batch: int = Field(500, description="Outbox rows relayed per broker round trip.")
    outbox_poll_seconds: float = Field(0.2, description="Outbox poll interval when nothing woke the relay.")
    kafka_idempotence: bool = Field(
        False,
        description="Idempotent producer for the outbox relay (Apache Kafka supports it; Tansu refuses it).",
    )
    outbox_retain_seconds: float = Field(
        86_400.0, description="Sent outbox rows are pruned this long after the broker acknowledged them."
    )
    dedup_window_seconds: float = Field(
        14 * 86_400.0,
        description=(
            "Processed-event ledger rows are pruned after this long. It must exceed how long an event "
            "id can come back: a consumer whose committed offsets expired re-reads a topic from its "
            "start, so ids as old as the topic's retention (Kafka: 7 days unless set) return; the "
            "re-drive republishes the same ids of reports without a case every redrive_after_seconds "
            "until they get one (the router still answers those from route_decision, by report id). "
            "Default 14 days: twice Kafka's retention (docs/architecture.md, Nothing is lost)."
        ),
    )
    prune_batch: int = Field(5000, description="Most rows the pruner deletes per table in one transaction.")
    prune_interval_seconds: float = Field(
        60.0, description="Pause between pruning passes (a pass that deleted a full batch goes on at once)."
    )
    redrive_after_seconds: float = Field(
        60.0, description="A report without a case after this long is published again."
    )
    lag_source: Literal["list_offsets", "highwater"] = Field(
        "list_offsets",
        description="Where lag takes high watermarks from (highwater on Tansu: its ListOffsets errs).",
    )
    lag_interval_seconds: float = Field(10.0, description="How often consumer lag is measured.")
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text, or one JSON object per line (gridloop.logs)."
    )
    access_log: bool = Field(
        False,
        description="One log line per HTTP request (logger gridloop.access; no query, headers or tokens).",
    )

    def db_url(self, service: str) -> str:
        """Database URL for one service: GRIDLOOP_<SERVICE>_DATABASE_URL, DATABASE_URL, or SQLite."""
        specific = getattr(self, f"{service}_database_url", None)
        if specific:
            return specific
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.var_dir / f'{service}.db'}"

    def notifier_base_url(self) -> str:
        """The notifier's base URL as the closer calls it: the setting, else its port on loopback."""
        return (self.notifier_url or f"http://127.0.0.1:{self.notifier_port}").rstrip("/")

    def port(self, service: str) -> int:
        """HTTP port of one service."""
        return int(getattr(self, f"{service}_port"))

    def signing_key(self) -> str:
        """Token signing key; generated once into var/ when not configured."""
        if self.jwt_secret:
            return self.jwt_secret
        path = self.var_dir / "jwt.secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()

    @field_validator(
        "kafka_sasl_mechanism",
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty variable (`GRIDLOOP_KAFKA_SSL_CAFILE=` in a compose file) means not set."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        """Protocol and mechanism names are accepted in any case (sasl_ssl, scram-sha-512)."""
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        """Refuse a malformed CIDR at start, not at the first request."""
        parse_networks(value)
        return value

    def proxies(self) -> tuple[IPNetwork, ...]:
        """The trusted proxies as networks (gridloop.net.client_address believes only these)."""
        return parse_networks(self.trusted_proxies)

    def derived_key(self, purpose: str) -> bytes:
        """A key of its own for one purpose of the signing key (`derive_key`)."""
        return derive_key(self.signing_key(), purpose)


# every accepted report derives several keys (rider token, pseudonyms, tracking secret): the same
# few (secret, purpose) pairs, so each is computed once per process
@lru_cache(maxsize=64)
def derive_key(secret: str, purpose: str) -> bytes:
    """A key of its own for one purpose: HMAC-SHA256(secret, "gridloop/v1/" + purpose).

    One configured secret, separate keys: a CSRF token or an address pseudonym never helps to forge a
    staff token, and each purpose can be told apart in review (SECURITY.md, Keys)."""
    if not purpose:
        raise ValueError("a derived key needs a purpose")
    return hmac.new(secret.encode(), f"gridloop/v1/{purpose}".encode(), hashlib.sha256).digest()


MIN_SECRET_BYTES = 32
"""Shortest accepted GRIDLOOP_JWT_SECRET outside dev mode (HS256 wants a key of at least 256 bits)."""
KNOWN_SECRETS = frozenset(
    {
        "",
        "change-me-in-production",  # the old compose default
        "changeme",
        "change-me",
        "secret",
        "test-secret",
        "gridloop",
        "gridloop-demo",  # the demo accounts' password
    }
)
"""Secrets that were ever published (compose, README, tests): refused whatever their length."""


def is_loopback_url(url: str) -> bool:
    """Whether a URL points at this machine only (localhost, 127.0.0.0/8, ::1)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def unsafe_settings(settings: Settings) -> list[str]:
    """Every reason these settings must not face the internet, one sentence each (empty: safe).

    Pure: reads only the settings (an unset GRIDLOOP_JWT_SECRET is fine: a random one is generated
    into var/). Production refuses to start on any of these; dev mode (GRIDLOOP_DEV=1) only warns."""
    problems: list[str] = []
    secret = settings.jwt_secret
    if secret is not None:
        if secret.strip() in KNOWN_SECRETS or secret.strip().lower() in KNOWN_SECRETS:
            shown = "empty" if not secret.strip() else f"the published example {secret.strip()!r}"
            problems.append(
                f"GRIDLOOP_JWT_SECRET is {shown}: anyone could sign staff tokens; "
                f"set {MIN_SECRET_BYTES}+ random bytes (e.g. `openssl rand -base64 48`)"
            )
        elif len(secret.encode()) < MIN_SECRET_BYTES:
            problems.append(
                f"GRIDLOOP_JWT_SECRET is {len(secret.encode())} bytes; at least {MIN_SECRET_BYTES} "
                "random bytes are needed (e.g. `openssl rand -base64 48`)"
            )
    public = {
        "GRIDLOOP_PUBLIC_BASE_URL": settings.public_base_url,
        "GRIDLOOP_CLOSER_PUBLIC_URL": settings.closer_public_url,
    }
    remote = {name: url for name, url in public.items() if not is_loopback_url(url)}
    for name, url in remote.items():
        if urlsplit(url).scheme != "https":
            problems.append(
                f"{name} is {url}: a public address must be https (tokens, cookies and riders' "
                "tracking links would cross the network in clear)"
            )
    if remote and not settings.cookie_secure:
        problems.append(
            "GRIDLOOP_COOKIE_SECURE is false while the public URLs are not loopback "
            f"({', '.join(sorted(remote))}): session and rider cookies would be sent over plain http"
        )
    problems += unsafe_kafka_settings(settings)
    return problems


def unsafe_kafka_settings(settings: Settings) -> list[str]:
    """The Kafka client settings that expose a secret or accept an impostor (part of `unsafe_settings`).

    A plaintext broker on a private network stays allowed (the compose stack's); what is refused is a
    password readable on the wire (PLAIN without TLS to a broker off this machine), and TLS that
    accepts any certificate the CA signed, for any broker (host name check off)."""
    problems: list[str] = []
    protocol = settings.kafka_security_protocol
    remote = [
        item.strip()
        for item in settings.kafka_bootstrap_servers.split(",")
        if item.strip() and not is_loopback_url(f"//{item.strip()}")
    ]
    if protocol == "SASL_PLAINTEXT" and settings.kafka_sasl_mechanism == "PLAIN" and remote:
        problems.append(
            "GRIDLOOP_KAFKA_SASL_MECHANISM=PLAIN over GRIDLOOP_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT to "
            f"{', '.join(remote)}: the Kafka password would cross the network in clear; use SASL_SSL "
            "(or SCRAM)"
        )
    if protocol in ("SSL", "SASL_SSL") and not settings.kafka_ssl_check_hostname:
        problems.append(
            "GRIDLOOP_KAFKA_SSL_CHECK_HOSTNAME is false: any certificate the CA signed would be "
            "accepted for any broker; give the brokers certificates that name their hosts"
        )
    return problems


class UnsafeSettingsError(SystemExit):
    """Start-up refused: the settings are unsafe outside dev mode (the message names each problem)."""


def refuse_unsafe(settings: Settings, what: str = "GridLoop") -> list[str]:
    """Stop the start with a message naming each problem, unless dev mode; return the warnings."""
    problems = unsafe_settings(settings)
    if problems and not settings.dev_mode:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise UnsafeSettingsError(
            f"{what} refuses to start with unsafe settings:\n{lines}\n"
            "Fix them, or set GRIDLOOP_DEV=1 on a development machine (never in production)."
        )
    return problems


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
