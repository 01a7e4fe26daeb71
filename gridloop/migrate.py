"""Alembic migrations, one history per service database (`gridloop db upgrade`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData

from gridloop.db import make_engine, normalize_url
from gridloop.settings import REPO_ROOT


def alembic_config(service: str, url: str) -> Config:
    """The Alembic configuration of one service's migration history."""
    cfg = Config()
    cfg.set_main_option("script_location", str(REPO_ROOT / "services" / service / "migrations"))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    cfg.attributes["service"] = service
    return cfg


def upgrade(service: str, url: str, revision: str = "head", secret: str | None = None) -> None:
    """Bring one service's database to the given revision; `secret` is the service secret a data
    migration keys pseudonyms with (default: the configured one, read only when a step needs it)."""
    if url.startswith("sqlite"):
        Path(url.split("///", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
    cfg = alembic_config(service, url)
    if secret is not None:
        cfg.attributes["secret"] = secret
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def run_env(metadata: MetaData) -> None:
    """Body of every service's migrations/env.py: run migrations online on the given connection."""
    from alembic import context

    cfg = context.config
    connection = cfg.attributes.get("connection")
    if connection is None:
        engine = make_engine(cfg.get_main_option("sqlalchemy.url") or "")
        with engine.begin() as conn:
            _run(context, conn, metadata)
        engine.dispose()
    else:
        _run(context, connection, metadata)


def _run(context: object, connection: object, metadata: MetaData) -> None:
    ctx = context  # alembic.context is a proxy module; typed loosely on purpose
    ctx.configure(  # type: ignore[attr-defined]
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite can only ALTER through table copies
        compare_type=True,
    )
    with ctx.begin_transaction():  # type: ignore[attr-defined]
        ctx.run_migrations()  # type: ignore[attr-defined]
