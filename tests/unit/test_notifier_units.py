"""The notifier's pure parts: rule validation and matching, message text, backoff, the digest plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas.reference import Station
from services.notifier import channels
from services.notifier.backoff import after_failure, delay
from services.notifier.deliveries import Due
from services.notifier.messages import render, render_digest
from services.notifier.rules import Rule, RulesError, Signal, load_rules, parse_rules, routes
from services.notifier.sender import plan
from tests.support.notifier import CONSOLE, RULES, T0, J

SRC = "rules.json"


def signal(event: str = "case.opened", **values: Any) -> Signal:
    """A manhole case of 开鲁网格站 at 开鲁新村, urgent unless told."""
    base: dict[str, Any] = {
        "event": event,
        "event_id": "e1",
        "case_id": "C-1",
        "time": T0,
        "station_id": "yh-s1",
        "category": "manhole_cover",
        "street_id": "yinhang",
        "place_name": "开鲁新村 3 号门",
        "priority": "urgent",
        "ack_due": T0 + timedelta(hours=1),
        "resolve_due": T0 + timedelta(hours=4),
    }
    return Signal(**{**base, **values})


# --- the shipped defaults ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sig", "expected"),
    [
        (signal(), [("urgent-new-case", "station")]),
        (signal(priority="normal"), []),
        (signal(priority="normal", clock="calendar"), [("danger-now-new-case", "station")]),
        (signal("case.escalated", priority="normal"), [("escalated", "station"), ("escalated", "centre")]),
        (signal("case.returned"), [("returned", "centre")]),
        (signal("case.report_merged", became_common_issue=True), [("common-issue", "centre")]),
        (signal("case.report_merged", became_common_issue=False), []),
        (signal("case.reopened"), [("reopened-by-rider", "station")]),
        (signal("case.on_duty", duty_station_id="yh-s2"), [("on-duty", "duty")]),
        (signal("case.nudged"), [("nudged", "station")]),
        (signal("case.acknowledged"), []),
    ],
)
def test_default_rules_route_each_event(sig: Signal, expected: list[tuple[str, str]]) -> None:
    """data/notify/rules.json: urgent new → station; red → station + centre; returned, common issue →
    centre; reopened, nudged → station; on duty → duty; anything else → nobody."""
    assert routes(RULES, sig) == expected


def test_rule_filters_and_one_channel_once() -> None:
    """Every filter must hold; two rules naming one channel send it once (the first rule's id)."""
    rules = parse_rules(
        [
            {"id": "a", "events": ["case.opened"], "stations": ["yh-s2"], "channels": ["station"]},
            {"id": "b", "events": ["case.opened"], "categories": ["manhole_cover"], "channels": ["station"]},
            {"id": "c", "events": ["case.opened"], "streets": ["yinhang"], "channels": ["station", "centre"]},
        ],
        SRC,
        J,
    )
    assert routes(rules, signal()) == [("b", "station"), ("c", "centre")]
    assert routes(rules, signal(street_id="pengpu", category="litter")) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rules": []}, "rules.json: expected a JSON list of rules at the top level"),
        (["x"], "rules.json: rule #0: expected a JSON object, got str"),
        (
            [{"id": "a", "events": [], "channels": ["station"]}],
            "rules.json: rule 'a' (#0): events: List should have at least 1 item after validation, not 0",
        ),
        (
            [{"id": "a", "events": ["case.opened"], "channels": ["boss"]}],
            "rules.json: rule 'a' (#0): channels: Value error, 'boss' is neither station, centre, duty "
            "nor an Apprise URL",
        ),
        (
            [{"id": "a", "events": ["opened"], "channels": ["station"]}],
            "rules.json: rule 'a' (#0): events.0: String should match pattern "
            "'^(case|topic)\\.[a-z][a-z_]{0,47}$'",
        ),
        (
            [{"id": "a", "events": ["case.opened"], "priorities": ["asap"], "channels": ["centre"]}],
            "rules.json: rule 'a' (#0): priorities.0: Input should be 'normal', 'high' or 'urgent'",
        ),
        (
            [{"id": "a", "events": ["case.opened"], "channels": ["centre"], "station": ["yh-s1"]}],
            "rules.json: rule 'a' (#0): station: Extra inputs are not permitted",
        ),
        (
            [
                {"id": "a", "events": ["case.opened"], "channels": ["centre"]},
                {"id": "a", "events": ["case.returned"], "channels": ["centre"]},
            ],
            "rules.json: rule 'a' (#1): the id is used by an earlier rule",
        ),
        (
            [{"id": "a", "events": ["case.opened"], "stations": ["yh-s9", "yh-s1"], "channels": ["station"]}],
            "rules.json: rule 'a' (#0): stations: unknown 'yh-s9'",
        ),
        (
            [{"id": "a", "events": ["case.opened"], "categories": ["ufo"], "channels": ["station"]}],
            "rules.json: rule 'a' (#0): categories: unknown 'ufo'",
        ),
    ],
)
def test_rules_validation_messages(data: Any, message: str) -> None:
    """A bad rules file stops the start with the file, the rule and the problem named."""
    with pytest.raises(RulesError) as caught:
        parse_rules(data, SRC, J)
    assert str(caught.value) == message


def test_rules_file_errors(tmp_path: Path) -> None:
    """A missing file, a file that is not JSON, a literal channel Apprise cannot send to."""
    missing = tmp_path / "none.json"
    with pytest.raises(RulesError) as caught:
        load_rules(missing, J)
    assert str(caught.value) == f"{missing}: file not found"
    broken = tmp_path / "broken.json"
    broken.write_text("[")
    with pytest.raises(RulesError) as caught:
        load_rules(broken, J)
    assert str(caught.value) == f"{broken}: not valid JSON (Expecting value: line 1 column 2 (char 1))"
    rules = [Rule(id="hook", events=["case.opened"], channels=["nosuch://x"])]
    with pytest.raises(RulesError) as caught:
        channels.check_literal_urls(rules, SRC)
    assert (
        str(caught.value)
        == "rules.json: rule 'hook' (#0): channels: 'nosuch://…' is not a URL Apprise can send to"
    )


# --- channels --------------------------------------------------------------------------------------


def test_channel_roles_resolve_to_stations_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    """station: the case's station; centre: its street's centre; duty: the duty station; a station without
    a URL takes the fallback, or none; `env:NAME` reads the environment."""
    stations = dict(J.stations)
    stations["yh-s1"] = Station(**{**J.stations["yh-s1"].model_dump(), "notify_url": "wecombot://s1key"})
    stations["yh-centre"] = Station(**{**J.stations["yh-centre"].model_dump(), "notify_url": "env:YH_CENTRE"})
    j = J.model_copy(update={"stations": stations})
    monkeypatch.setenv("YH_CENTRE", "dingtalk://centretoken")
    sig = signal("case.on_duty", duty_station_id="yh-s2")
    assert channels.resolve("station", sig, j, None) == channels.Target("wecombot://s1key", "station:yh-s1")
    assert channels.resolve("centre", sig, j, None) == channels.Target(
        "dingtalk://centretoken", "centre:yh-centre"
    )
    assert channels.resolve("duty", sig, j, None) is None
    assert channels.resolve("duty", sig, j, "json://127.0.0.1:1/") == channels.Target(
        "json://127.0.0.1:1/", "duty:yh-s2"
    )
    assert channels.resolve("json://hook.example/x", sig, j, None) == channels.Target(
        "json://hook.example/x", "url"
    )
    monkeypatch.delenv("YH_CENTRE")
    assert channels.resolve("centre", sig, j, None) is None
    assert [
        channels.kind_of(u)
        for u in ("wecombot://k", "DingTalk://t", "mailto://a@b.cn", "json://h", "ntfy://x")
    ] == [
        "wecombot",
        "dingtalk",
        "mailto",
        "json",
        "other",
    ]


# --- messages --------------------------------------------------------------------------------------


def test_message_text_zh_first_with_link_and_shanghai_time() -> None:
    """Category by its Chinese name, place, station, deadlines in Shanghai time, the console link."""
    message = render(signal(), J, CONSOLE)
    assert message.title == "【紧急】新案件 · 井盖缺失或破损"
    assert message.body == (
        "类别：井盖缺失或破损\n"
        "地点：开鲁新村 3 号门\n"
        "网格站：开鲁网格站\n"
        "优先级：紧急\n"
        "签收时限：2026-11-24 11:00\n"
        "办结时限：2026-11-24 14:00（上海时间）\n"
        "查看：https://closer.example.cn/console/cases/C-1\n"
        "[urgent] New case: Missing or broken manhole cover, due 2026-11-24 14:00 (Shanghai)"
    )
    red = render(signal("case.escalated", priority="normal", deadline="ack"), J, CONSOLE, english=False)
    assert red.title == "签收超时督办 · 井盖缺失或破损"
    assert "[" not in red.body
    common = render(
        signal("case.report_merged", priority="high", distinct_riders=3), J, CONSOLE, english=False
    )
    assert common.title == "共性问题：3 位骑手上报 · 井盖缺失或破损"


def test_message_has_no_rider_data() -> None:
    """Nothing a rider typed or is known by: the signal has no field for it, and the text names none."""
    fields = set(Signal.__dataclass_fields__)
    assert not fields & {"description", "rider_ref", "platform", "photo_ids", "report_id", "comment"}


def test_digest_groups_titles_and_links() -> None:
    """One grouped message: a count in the title, each notification's title and link."""
    message = render_digest(["A", "B"], ["https://x/1", "https://x/2"], english=False)
    assert message.title == "【汇总】2 条通知"
    assert message.body == "1. A\n   https://x/1\n2. B\n   https://x/2"


# --- backoff and the digest plan --------------------------------------------------------------------


def test_backoff_doubles_to_a_cap_then_gives_up() -> None:
    """10, 20, 40, … seconds at most the cap; after max_attempts: None (failed)."""
    assert [delay(n, 10, 60) for n in range(0, 6)] == [0.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert after_failure(2, 3, now, 10, 60) == now + timedelta(seconds=20)
    assert after_failure(3, 3, now, 10, 60) is None


def _due(i: int, channel: str) -> Due:
    return Due(i, channel, "json", f"t{i}", "b", "l", 0, T0, T0)


def test_plan_digests_a_flooded_channel_only() -> None:
    """More than the threshold for a channel: one send of all; the others one by one, in order."""
    rows = [_due(1, "a"), _due(2, "b"), _due(3, "a"), _due(4, "a"), _due(5, "b")]
    sends = plan(rows, threshold=2)
    assert [[r.id for r in s] for s in sends] == [[1, 3, 4], [2], [5]]
    assert [[r.id for r in s] for s in plan(rows, threshold=3)] == [[1], [3], [4], [2], [5]]
