"""The CloudEvents 1.0 envelope (structured JSON mode) every GridLoop message travels in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 structured-mode event; `data` holds a model from `schemas.events`."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(description="Unique event id; consumers skip an id they already applied.")
    source: str = Field(description="`gridloop/<service>`.", pattern=r"^gridloop/[a-z]+$")
    type: str = Field(
        description="`gridloop.<name>.v<N>`, e.g. gridloop.report.submitted.v1.",
        pattern=r"^gridloop\.[a-z_]+\.[a-z_]+\.v[0-9]+$",
    )
    time: datetime = Field(description="When the fact happened, UTC.")
    subject: str = Field(description="The report or case id the event is about.")
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any] = Field(description="The event payload, validated by its type's model.")

    @field_validator("time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        """Times are always timezone-aware UTC."""
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @property
    def name(self) -> str:
        """The event name without prefix and version, e.g. `report.submitted`."""
        return self.type.removeprefix("gridloop.").rsplit(".", 1)[0]

    @property
    def version(self) -> int:
        """The `data` schema version, the N of `.vN`."""
        return int(self.type.rsplit(".v", 1)[1])


def new_event_id() -> str:
    """A fresh unique event id."""
    return str(uuid.uuid4())
