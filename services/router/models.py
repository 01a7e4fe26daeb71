"""The router's tables: the index of cases (for duplicate merging), its decisions, places it has seen.

Everything the router decides from lives here, none of it in process memory: two replicas in one
consumer group, or a replica that took over partitions from a dead one, see the same index.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Index, Table, Text
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from gridloop.plumbing import define_plumbing
from gridloop.rawsql import table_of


class Base(SQLModel, registry=registry()):
    """The router's tables: a MetaData of its own, so its migrations see only these."""


PLUMBING = define_plumbing(Base.metadata)


class OpenCase(Base, table=True):
    """A case the router named: open ones take merges; closed ones stay as evidence of recurrence."""

    __tablename__ = "open_case"
    __table_args__ = (
        Index("ix_open_case_cat_status", "category", "open"),
        # duplicate and recurrence lookups: a category, then a latitude band (bounding box)
        Index("ix_open_case_cat_lat", "category", "lat"),
        Index("ix_open_case_place", "place_id", "category"),
    )

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
    version: int = Field(default=0, description="The closer's case version last applied (stale events skip).")
    late_reports: int = Field(default=0, description="Reports merged after the closer had closed the case.")
    distinct_riders: int = Field(default=0, description="Distinct known riders among the case's reports.")


class CaseRider(Base, table=True):
    """A report on a case, with its pseudonymous rider, for counting distinct riders."""

    __tablename__ = "case_rider"
    __table_args__ = (
        # has this rider reported the case before? which riders reported it within 24 h?
        Index("ix_case_rider_case_rider", "case_id", "rider_ref"),
        Index("ix_case_rider_case_at", "case_id", "at"),
    )

    report_id: str = Field(primary_key=True, max_length=40)
    case_id: str = Field(index=True, max_length=40)
    rider_ref: str | None = Field(default=None, max_length=80)
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class RouteDecision(Base, table=True):
    """The decision taken for a report, kept so a re-driven report re-emits the same answer."""

    __tablename__ = "route_decision"

    report_id: str = Field(primary_key=True, max_length=40)
    case_id: str = Field(max_length=40)
    decision: str = Field(max_length=10)
    event_id: str = Field(max_length=64)
    envelope: str = Field(sa_column=Column(Text, nullable=False))
    decided_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class KnownPlace(Base, table=True):
    """A report code's place as last seen on a report, so `explain?code=` needs no other service's data."""

    __tablename__ = "known_place"

    code: str = Field(primary_key=True, max_length=20)
    place_id: str = Field(max_length=40)
    name: str | None = Field(default=None, max_length=200)
    grid_id: str | None = Field(default=None, max_length=40)
    lat: float
    lon: float
    seen_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


# the tables themselves, for the plain-SQL paths (gridloop.rawsql derives their statements and rows);
OPEN_CASE: Table = table_of(OpenCase)
CASE_RIDER: Table = table_of(CaseRider)
ROUTE_DECISION: Table = table_of(RouteDecision)
KNOWN_PLACE: Table = table_of(KnownPlace)
