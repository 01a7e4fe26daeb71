"""Alembic environment of the notifier's database (the shared body is gridloop.migrate.run_env)."""

from gridloop.migrate import run_env
from services.notifier.models import Base

run_env(Base.metadata)
