"""Alembic environment of the router's database (the shared body is gridloop.migrate.run_env)."""

from gridloop.migrate import run_env
from services.router.models import Base

run_env(Base.metadata)
