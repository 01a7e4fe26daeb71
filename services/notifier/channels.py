"""Channels: a rule's `station` / `centre` / `duty` resolved to an Apprise URL, and sending through Apprise.

Apprise speaks 企业微信群机器人 (`wecombot://`), 钉钉 (`dingtalk://`), e-mail (`mailto://`), generic
`json://` webhooks and many more. A URL may carry a secret (a robot key, a password): it is stored
in the notifier's own database, but shown only through `masked` (Apprise's privacy form).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import apprise

from schemas.reference import Jurisdiction
from services.notifier.rules import ROLES, Rule, RulesError, Signal

log = logging.getLogger(__name__)

KNOWN_KINDS = frozenset({"wecombot", "dingtalk", "mailto", "mailtos", "json", "jsons", "form", "xml"})
"""Schemes kept as the `channel_kind` label; any other scheme counts as `other` (bounded labels)."""


@dataclass(frozen=True)
class Target:
    """Where one delivery goes: the URL, and what it stands for (`station:yh-s1`, `url`)."""

    url: str
    label: str


def kind_of(url: str) -> str:
    """The `channel_kind` label of a URL: its scheme when known, else `other`."""
    scheme = url.split("://", 1)[0].lower()
    return scheme if scheme in KNOWN_KINDS else "other"


def expand(url: str) -> str | None:
    """A station's `notify_url` as sent: `env:NAME` read from the environment (None when unset)."""
    if url.startswith("env:"):
        return os.environ.get(url[4:]) or None
    return url


def is_sendable(url: str) -> bool:
    """Whether Apprise has a plugin for the URL and accepts its form."""
    return apprise.Apprise.instantiate(url) is not None


def masked(url: str) -> str:
    """The URL with its secrets hidden (what APIs and logs show)."""
    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        return url.split("://", 1)[0] + "://…"
    return str(plugin.url(privacy=True))


def check_literal_urls(rules: list[Rule], source: str) -> None:
    """Refuse at start a rule whose literal channel Apprise cannot send to (RulesError names it)."""
    for index, rule in enumerate(rules):
        for channel in rule.channels:
            if channel not in ROLES and not is_sendable(channel):
                raise RulesError(
                    f"{source}: rule {rule.id!r} (#{index}): channels: {masked(channel)!r} is not a URL "
                    "Apprise can send to"
                )


def resolve(channel: str, signal: Signal, j: Jurisdiction, fallback: str | None) -> Target | None:
    """The URL of one of a rule's channels for this event, or None (no such station, no URL set)."""
    if channel not in ROLES:
        return Target(channel, "url")
    station_id: str | None
    if channel == "station":
        station_id = signal.station_id
    elif channel == "duty":
        station_id = signal.duty_station_id
    else:
        street = signal.street_id if signal.street_id in j.streets else None
        station = j.stations.get(signal.station_id)
        street = street or (station.street_id if station else None)
        station_id = j.centre_for(street).id
    station = j.stations.get(station_id) if station_id else None
    if station is None:
        return None
    url = expand(station.notify_url) if station.notify_url else None
    url = url or fallback
    return Target(url, f"{channel}:{station.id}") if url else None


def send(url: str, title: str, body: str) -> tuple[bool, str]:
    """Send one message through Apprise (blocking); (ok, what Apprise said when it failed)."""
    notifier = apprise.Apprise()
    if not notifier.add(url):
        return False, f"not a URL Apprise can send to: {masked(url)}"
    with apprise.LogCapture(level=logging.WARNING) as captured:
        try:
            ok = bool(notifier.notify(title=title, body=body))
        except Exception as exc:  # a plugin bug must not stop the sender loop
            return False, f"{type(exc).__name__}: {exc}"[:1000]
        said = captured.getvalue() if hasattr(captured, "getvalue") else ""
    if ok:
        return True, ""
    lines = [line.split(" - ", 2)[-1] for line in str(said).strip().splitlines() if line.strip()]
    return False, ("; ".join(lines) or "Apprise reported a failure")[:1000]
