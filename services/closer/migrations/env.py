"""Alembic environment of the closer's database (the shared body is gridloop.migrate.run_env)."""

from gridloop.migrate import run_env
from services.closer.models import Base

run_env(Base.metadata)
