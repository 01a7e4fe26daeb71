"""Notification rules (data/notify/rules.json): which events go to which channels, validated at start.

A rule matches an event type (or several), and optionally streets, stations, categories, priorities,
the SLA clock and "just became a common issue"; an empty list matches anything. It routes to
channels: `station` (the case's station's `notify_url`), `centre` (the case's street's operations
centre), `duty` (the station on duty named by `case.on_duty`), or a literal Apprise URL. Event types
are strings: a rule for a type this code does not parse yet (another branch's `case.nudged`) is
valid and waits for it. Pure: no I/O beyond reading the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from schemas.cases import ClockMode, Priority
from schemas.reference import Jurisdiction, Slug

ChannelRole = Literal["station", "centre", "duty"]
ROLES: tuple[ChannelRole, ...] = ("station", "centre", "duty")
EventName = Annotated[str, StringConstraints(pattern=r"^(case|topic)\.[a-z][a-z_]{0,47}$")]
Channel = Annotated[str, StringConstraints(min_length=1, max_length=500)]


class RulesError(ValueError):
    """A bad rules file; the message names the file, the rule and the problem."""


class Rule(BaseModel):
    """One rule: what it matches, and the channels it sends to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Slug
    events: list[EventName] = Field(min_length=1)
    streets: list[Slug] = Field(default_factory=list)
    stations: list[Slug] = Field(default_factory=list)
    categories: list[Slug] = Field(default_factory=list)
    priorities: list[Priority] = Field(default_factory=list)
    clock: ClockMode | None = None
    common_issue: bool | None = Field(
        None, description="true: only the event that made the case a common issue (共性问题)."
    )
    channels: list[Channel] = Field(min_length=1)
    description: str = ""

    @field_validator("channels")
    @classmethod
    def _channels(cls, channels: list[str]) -> list[str]:
        """Each channel is a role (station, centre, duty) or an Apprise URL (scheme://…)."""
        for channel in channels:
            if channel not in ROLES and "://" not in channel:
                raise ValueError(f"{channel!r} is neither station, centre, duty nor an Apprise URL")
        return channels


@dataclass(frozen=True)
class Signal:
    """What the rules see of one event: its type and the case it is about (no rider data)."""

    event: str
    event_id: str
    case_id: str
    time: datetime
    station_id: str
    category: str = ""
    street_id: str | None = None
    place_name: str | None = None
    priority: Priority = "normal"
    clock: ClockMode = "working"
    status: str = ""
    became_common_issue: bool = False
    distinct_riders: int = 0
    deadline: str | None = None
    ack_due: datetime | None = None
    resolve_due: datetime | None = None
    duty_station_id: str | None = None


def matches(rule: Rule, signal: Signal) -> bool:
    """Whether one rule takes the event."""
    return (
        signal.event in rule.events
        and (not rule.streets or signal.street_id in rule.streets)
        and (not rule.stations or signal.station_id in rule.stations)
        and (not rule.categories or signal.category in rule.categories)
        and (not rule.priorities or signal.priority in rule.priorities)
        and (rule.clock is None or signal.clock == rule.clock)
        and (rule.common_issue is None or signal.became_common_issue == rule.common_issue)
    )


def routes(rules: Sequence[Rule], signal: Signal) -> list[tuple[str, str]]:
    """(rule id, channel) of every matching rule's channels, in file order, each channel once."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for rule in rules:
        if matches(rule, signal):
            for channel in rule.channels:
                if channel not in seen:
                    seen.add(channel)
                    out.append((rule.id, channel))
    return out


def _explain(exc: ValidationError) -> str:
    """pydantic's errors as one line: ``field: message; …``."""
    return "; ".join(
        f"{'.'.join(str(x) for x in e['loc']) or 'rule'}: {e['msg']}" for e in exc.errors(include_url=False)
    )


def parse_rules(data: Any, source: str, jurisdiction: Jurisdiction | None = None) -> list[Rule]:
    """Validate the rules (a JSON list); RulesError names the file, the rule and what is wrong."""
    if not isinstance(data, list):
        raise RulesError(f"{source}: expected a JSON list of rules at the top level")
    rules: list[Rule] = []
    ids: set[str] = set()
    for index, raw in enumerate(data):
        ident = raw.get("id") if isinstance(raw, dict) else None
        entry = f"rule {ident!r} (#{index})" if isinstance(ident, str) and ident else f"rule #{index}"
        if not isinstance(raw, dict):
            raise RulesError(f"{source}: {entry}: expected a JSON object, got {type(raw).__name__}")
        try:
            rule = Rule.model_validate(raw)
        except ValidationError as exc:
            raise RulesError(f"{source}: {entry}: {_explain(exc)}") from None
        if rule.id in ids:
            raise RulesError(f"{source}: {entry}: the id is used by an earlier rule")
        ids.add(rule.id)
        if jurisdiction is not None:
            _cross_check(rule, jurisdiction, source, entry)
        rules.append(rule)
    return rules


def _unknown(names: Iterable[str], known: Iterable[str]) -> list[str]:
    known_set = set(known)
    return [n for n in names if n not in known_set]


def _cross_check(rule: Rule, j: Jurisdiction, source: str, entry: str) -> None:
    """The streets, stations and categories a rule names exist in the reference data."""
    for field, names, known in (
        ("streets", rule.streets, j.streets),
        ("stations", rule.stations, j.stations),
        ("categories", rule.categories, j.categories),
    ):
        missing = _unknown(names, known)
        if missing:
            raise RulesError(f"{source}: {entry}: {field}: unknown {', '.join(repr(m) for m in missing)}")


def load_rules(path: Path, jurisdiction: Jurisdiction | None = None) -> list[Rule]:
    """Read and validate a rules file (RulesError when it is missing, not JSON or has a bad rule)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RulesError(f"{path}: file not found") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: not valid JSON ({exc})") from None
    return parse_rules(data, str(path), jurisdiction)
