"""Process settings: environment variables with the GRIDLOOP_ prefix, plus the two standard names."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
ServiceName = Literal["reporter", "router", "closer"]
SERVICES: tuple[ServiceName, ...] = ("reporter", "router", "closer")
DEFAULT_PORTS: dict[str, int] = {"reporter": 8001, "router": 8002, "closer": 8003}


class Settings(BaseSettings):
    """Everything a GridLoop process can be told from its environment."""

    model_config = SettingsConfigDict(env_prefix="GRIDLOOP_", extra="ignore")

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "GRIDLOOP_KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers, comma separated.",
    )
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "GRIDLOOP_DATABASE_URL"),
        description="This service's database; default: a SQLite file per service under var/.",
    )
    reporter_database_url: str | None = Field(None, description="The reporter's database.")
    router_database_url: str | None = Field(None, description="The router's database.")
    closer_database_url: str | None = Field(None, description="The closer's database.")
    var_dir: Path = Field(REPO_ROOT / "var", description="Where SQLite files, broker data and logs live.")
    host: str = Field("127.0.0.1", description="Address the HTTP services bind to.")
    reporter_port: int = 8001
    router_port: int = 8002
    closer_port: int = 8003
    public_base_url: str = Field(
        "http://127.0.0.1:8001", description="Public URL of the reporter; QR codes point here."
    )
    closer_public_url: str = Field("http://127.0.0.1:8003", description="Public URL of the closer.")
    jurisdiction_dir: Path = Field(
        REPO_ROOT / "data" / "jurisdictions", description="Reference data: grids, stations, categories."
    )
    jwt_secret: str | None = Field(
        None, description="Signing key for staff tokens (default: var/jwt.secret)."
    )
    token_ttl_seconds: int = Field(8 * 3600, description="Lifetime of a staff bearer token.")
    topic_prefix: str = Field(
        "", description="Prepended to every topic name (several deployments or test runs on one cluster)."
    )
    topic_partitions: int = Field(6, description="Partitions per topic created by `gridloop topics`.")
    topic_replication: int = Field(1, description="Replication factor of created topics.")
    consumer_max_records: int = Field(500, description="Most records a consumer applies in one transaction.")
    fetch_max_wait_ms: int = Field(50, description="Consumer fetch wait; every hop may add this much.")
    fetch_min_bytes: int = Field(
        32768, description="Bytes a fetch waits for (up to fetch_max_wait_ms): larger batches under load."
    )
    session_timeout_ms: int = Field(10_000, description="Consumer group session timeout.")
    deadletter_attempts: int = Field(3, description="Attempts before a message goes to `deadletter`.")
    outbox_batch: int = Field(500, description="Outbox rows relayed per broker round trip.")
    outbox_poll_seconds: float = Field(0.2, description="Outbox poll interval when nothing woke the relay.")
    redrive_after_seconds: float = Field(
        60.0, description="A report without a case after this long is published again."
    )
    lag_source: Literal["list_offsets", "highwater"] = Field(
        "list_offsets",
        description="Where lag takes high watermarks from (highwater on Tansu: its ListOffsets errs).",
    )
    lag_interval_seconds: float = Field(10.0, description="How often consumer lag is measured.")
    log_level: str = "INFO"

    def db_url(self, service: str) -> str:
        """Database URL for one service: GRIDLOOP_<SERVICE>_DATABASE_URL, DATABASE_URL, or SQLite."""
        specific = getattr(self, f"{service}_database_url", None)
        if specific:
            return specific
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.var_dir / f'{service}.db'}"

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
