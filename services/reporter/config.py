"""The reporter's own settings (GRIDLOOP_ environment variables; the rate limits GRIDLOOP_RATE_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ReporterConfig(BaseSettings):
    """Request caps, the redrive batch, trusted proxies and the rider cookie of the reporter."""

    model_config = SettingsConfigDict(env_prefix="GRIDLOOP_", extra="ignore")

    max_json_bytes: int = Field(64 * 1024, gt=0, description="Largest JSON report body accepted (413 above).")
    max_form_bytes: int = Field(
        64 * 1024, gt=0, description="Largest feedback, Open311 or admin body accepted (413 above)."
    )
    redrive_batch: int = Field(500, gt=0, description="Reports without a case published again per round.")
    rider_cookie_secure: bool | None = Field(
        None, description="The rider cookie's Secure flag (default: on when the public base URL is https)."
    )


class RateLimits(BaseSettings):
    """Limits, from GRIDLOOP_RATE_* environment variables (0 switches one off)."""

    model_config = SettingsConfigDict(env_prefix="GRIDLOOP_RATE_", extra="ignore")

    window_seconds: int = Field(600, description="The sliding window every limit counts over.")
    per_code: int = Field(60, description="Reports through one report code per window.")
    per_rider: int = Field(10, description="Reports from one rider token per window.")
    per_address: int = Field(60, description="Reports from one client address per window.")
    new_riders_per_address: int = Field(
        20, description="Riders sending their first report from one client address per window."
    )


def get_config() -> ReporterConfig:
    """The reporter's settings from the environment."""
    return ReporterConfig()
