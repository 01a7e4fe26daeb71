"""The reporter's own settings (GRIDLOOP_ environment variables; the rate limits GRIDLOOP_RATE_)."""

from __future__ import annotations

from pydantic import Field, SecretStr
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
    vapid_private_key: SecretStr | None = Field(
        None, description="Web Push signing key, P-256 raw base64url (default: generated into var/vapid.key)."
    )
    vapid_public_key: str | None = Field(
        None, description="Its public key (optional: checked against the private key when given)."
    )
    vapid_subject: str = Field(
        "mailto:gridloop@localhost", description="Who push services may contact about our pushes (RFC 8292)."
    )
    push_hosts: str = Field(
        ".googleapis.com,.push.services.mozilla.com,.push.apple.com,.notify.windows.com",
        description="Push service hosts a subscription may name (comma-separated; a leading dot: any "
        "subdomain). Every other endpoint is refused, so the reporter never posts to a host a rider chose.",
    )
    push_max_attempts: int = Field(8, gt=0, description="Tries of one push before it is given up.")
    push_retry_seconds: float = Field(5.0, gt=0, description="First retry delay of a push; doubles per try.")
    push_poll_seconds: float = Field(2.0, gt=0, description="How often the push sender looks for due pushes.")

    def push_host_list(self) -> tuple[str, ...]:
        """The allowed push hosts, lower case."""
        return tuple(h.strip().lower() for h in self.push_hosts.split(",") if h.strip())


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
