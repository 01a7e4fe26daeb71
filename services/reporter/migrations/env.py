"""Alembic environment of the reporter's database (the shared body is gridloop.migrate.run_env)."""

from gridloop.migrate import run_env
from services.reporter.models import Base

run_env(Base.metadata)
