"""The reporter's tables: places and their report codes, reports, and the riders' view of cases."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Index, Text
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from gridloop.plumbing import define_plumbing


class Base(SQLModel, registry=registry()):
    """The reporter's tables: a MetaData of its own, so its migrations see only these."""

PLUMBING = define_plumbing(Base.metadata)


def _ts(nullable: bool = False) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable)


class Place(Base, table=True):
    """A spot where a report code is posted: a gate, a lamppost, a rider station."""

    __tablename__ = "place"

    place_id: str = Field(primary_key=True, max_length=40)
    name_zh: str = Field(max_length=120)
    name_en: str = Field(default="", max_length=120)
    lat: float
    lon: float
    grid_id: str | None = Field(default=None, max_length=40)
    station_id: str | None = Field(default=None, max_length=40)
    active: bool = True
    created_at: datetime = Field(sa_column=_ts())


class ReportCode(Base, table=True):
    """A printed QR/short code that opens the report page of a place."""

    __tablename__ = "report_code"

    code: str = Field(primary_key=True, max_length=16)
    place_id: str = Field(foreign_key="place.place_id", index=True, max_length=40)
    active: bool = True
    created_at: datetime = Field(sa_column=_ts())
    deactivated_at: datetime | None = Field(default=None, sa_column=_ts(True))
    replaced_by: str | None = Field(default=None, max_length=16)


class Report(Base, table=True):
    """A rider's report, stored before the 202 answer; its case arrives later from `cases.events`."""

    __tablename__ = "report"
    __table_args__ = (Index("ix_report_unfinished", "case_id", "last_published_at"),)

    report_id: str = Field(primary_key=True, max_length=40)
    idempotency_key: str | None = Field(default=None, unique=True, max_length=100)
    request_hash: str = Field(max_length=64)
    channel: str = Field(max_length=10)
    category: str = Field(max_length=40)
    code: str | None = Field(default=None, max_length=16)
    place_id: str | None = Field(default=None, max_length=40)
    grid_id: str | None = Field(default=None, max_length=40)
    lat: float | None = None
    lon: float | None = None
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    danger_now: bool = False
    platform: str | None = Field(default=None, max_length=20)
    rider_no: str | None = Field(default=None, max_length=40)
    rider_ref: str | None = Field(default=None, max_length=80, index=True)
    plus_one_case_id: str | None = Field(default=None, max_length=40)
    submitted_at: datetime = Field(sa_column=_ts())
    submitted_event_id: str = Field(max_length=64)
    last_published_at: datetime = Field(sa_column=_ts())
    case_id: str | None = Field(default=None, max_length=40, index=True)
    status: str = Field(default="received", max_length=20)
    status_at: datetime | None = Field(default=None, sa_column=_ts(True))
    case_version: int = 0


class ReportEvent(Base, table=True):
    """One step of a report's public timeline (no personal data)."""

    __tablename__ = "report_event"

    id: int | None = Field(default=None, primary_key=True)
    report_id: str = Field(foreign_key="report.report_id", index=True, max_length=40)
    status: str = Field(max_length=20)
    action: str = Field(max_length=30)
    at: datetime = Field(sa_column=_ts())
    note: str | None = Field(default=None, max_length=500)
