"""The router's tables: the index of open cases (for duplicate merging) and its decisions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Index, Text
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from gridloop.plumbing import define_plumbing


class Base(SQLModel, registry=registry()):
    """The router's tables: a MetaData of its own, so its migrations see only these."""

PLUMBING = define_plumbing(Base.metadata)


class OpenCase(Base, table=True):
    """A case that new reports of the same category nearby may merge into."""

    __tablename__ = "open_case"
    __table_args__ = (Index("ix_open_case_cat_status", "category", "open"),)

    case_id: str = Field(primary_key=True, max_length=40)
    category: str = Field(max_length=40)
    station_id: str = Field(max_length=40)
    grid_id: str | None = Field(default=None, max_length=40)
    street_id: str | None = Field(default=None, max_length=40)
    place_id: str | None = Field(default=None, max_length=40)
    lat: float | None = None
    lon: float | None = None
    opened_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    last_report_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    open: bool = Field(default=True)
    status: str = Field(default="new", max_length=20)
    triage: bool = False
    common_issue: bool = False


class CaseRider(Base, table=True):
    """A report on a case, with its pseudonymous rider, for counting distinct riders."""

    __tablename__ = "case_rider"

    report_id: str = Field(primary_key=True, max_length=40)
    case_id: str = Field(index=True, max_length=40)
    rider_ref: str | None = Field(default=None, max_length=80)
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class RouteDecision(Base, table=True):
    """The decision taken for a report, kept so a redelivered report re-emits the same answer."""

    __tablename__ = "route_decision"

    report_id: str = Field(primary_key=True, max_length=40)
    case_id: str = Field(max_length=40)
    decision: str = Field(max_length=10)
    event_id: str = Field(max_length=64)
    envelope: str = Field(sa_column=Column(Text, nullable=False))
    decided_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
