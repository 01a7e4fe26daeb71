"""The closer's own settings (environment variables with the GRIDLOOP_ prefix)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CloserConfig(BaseSettings):
    """Time zone of the working calendar, rider confirm window, scheduler cadence and the console cookie.

    Photo limits are gridloop.photos' (one set for every service); the old GRIDLOOP_PHOTO_MAX_BYTES
    and GRIDLOOP_PHOTO_MAX_SIDE are ignored (extra="ignore"), and so is the old GRIDLOOP_WORK_HOURS:
    working hours are each street's, in its street.json (`working_hours`)."""

    model_config = SettingsConfigDict(env_prefix="GRIDLOOP_", extra="ignore")

    work_timezone: str = Field("Asia/Shanghai", description="Time zone of the working hours.")
    calendar_dir: Path | None = Field(
        None,
        description=(
            "The shipped official calendar years (<year>.json); default: the calendar folder next to"
            " the jurisdiction dir (data/calendar). Imported years live in the closer's database."
        ),
    )
    confirm_window_hours: float = Field(
        72.0, gt=0, description="A resolved case the rider has not answered closes after this long."
    )
    scheduler_interval_seconds: float = Field(
        5.0, gt=0, description="How often the escalation scheduler looks for due work."
    )
    gauge_interval_seconds: float = Field(15.0, gt=0, description="How often gridloop_cases_open is counted.")
    stream_poll_seconds: float = Field(
        1.0,
        gt=0,
        description=(
            "How often the live queue's poller (one per process) reads the timeline for other replicas'"
            " changes; also how often an open stream re-checks its token."
        ),
    )


def calendar_dir(config: CloserConfig, jurisdiction_dir: Path) -> Path:
    """Where the shipped calendar years are: the setting, else ``<jurisdiction dir>/../calendar``."""
    return config.calendar_dir or jurisdiction_dir.parent / "calendar"


def get_config() -> CloserConfig:
    """The closer's settings from the environment."""
    return CloserConfig()
