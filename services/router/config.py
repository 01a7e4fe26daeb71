"""The router's own settings (environment variables with the GRIDLOOP_ prefix)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from gridloop.settings import REPO_ROOT


class RouterConfig(BaseSettings):
    """Where the reference places file is (report codes explainable before anyone reported them)."""

    model_config = SettingsConfigDict(env_prefix="GRIDLOOP_", extra="ignore")

    places_file: Path | None = Field(
        REPO_ROOT / "data" / "demo" / "places.json",
        description="Reference places (codes with surveyed points) for explain by code; "
        "a missing file means codes are known from reports only.",
    )


def get_config() -> RouterConfig:
    """The router's settings from the environment."""
    return RouterConfig()
