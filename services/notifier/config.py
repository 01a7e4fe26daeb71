"""The notifier's own settings (environment variables with the GRIDLOOP_NOTIFY_ prefix)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from gridloop.settings import REPO_ROOT


class NotifierConfig(BaseSettings):
    """Where the rules are, the channel of last resort, and the sender's pace, retries and digest."""

    model_config = SettingsConfigDict(env_prefix="GRIDLOOP_NOTIFY_", extra="ignore")

    rules_file: Path = Field(
        REPO_ROOT / "data" / "notify" / "rules.json",
        description="The notification rules, validated at start.",
    )
    fallback_url: str | None = Field(
        None,
        description="The Apprise URL for a station or centre with no `notify_url` of its own (`gridloop up`: "
        "its terminal sink); unset: such a notification is counted `unrouted` and not sent.",
    )
    send_interval_seconds: float = Field(
        1.0, gt=0, description="How often the sender looks for due deliveries."
    )
    hold_seconds: float = Field(
        2.0,
        ge=0,
        description="A new delivery waits this long before its first try, so a flood gathers into a digest.",
    )
    digest_threshold: int = Field(
        5,
        ge=1,
        description="More due deliveries than this for one channel at once go as one grouped message.",
    )
    max_attempts: int = Field(6, ge=1, description="Attempts before a delivery is marked failed.")
    backoff_seconds: float = Field(
        10.0, gt=0, description="Wait after the first failed attempt; doubles after each."
    )
    backoff_max_seconds: float = Field(900.0, gt=0, description="Longest wait between attempts.")
    english: bool = Field(True, description="Add an English line after the Chinese text.")


def get_config() -> NotifierConfig:
    """The notifier's settings from the environment."""
    return NotifierConfig()
