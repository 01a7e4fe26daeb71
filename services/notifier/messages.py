"""The text of a notification: zh-CN first, an English line after; pure (no I/O).

A message says what happened, the category (its Chinese name from the jurisdiction), the place (the
registered name of the report code's place), the station, the due time in Shanghai time and a link
to the case in the staff console. It carries no rider data: no rider reference, no platform, and not
the report's description either. The description is the rider's own words; it can hold a phone
number, a plate or a name, and these messages leave for third-party chat groups and mailboxes
(企业微信, 钉钉, e-mail) where nothing can be taken back. Staff read the words in the console.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from schemas.reference import Jurisdiction
from services.notifier.rules import Signal

SHANGHAI = ZoneInfo("Asia/Shanghai")

# event name -> (zh headline, en headline)
HEADLINES: dict[str, tuple[str, str]] = {
    "case.opened": ("新案件", "New case"),
    "case.escalated": ("案件超时督办", "Case overdue (red)"),
    "case.returned": ("退单待裁定", "Case returned, awaiting a ruling"),
    "case.report_merged": ("共性问题", "Common issue"),
    "case.reopened": ("骑手反馈未修好，案件重新处置", "Rider says not fixed: case reopened"),
    "case.on_duty": ("值班：非工作时间案件", "On duty: out-of-hours case"),
    "case.nudged": ("骑手催办", "Rider nudged the case"),
    "case.resolved": ("案件已办结", "Case resolved"),
    "case.closed": ("案件已结案", "Case closed"),
    "topic.opened": ("新议题（共性问题）", "New topic (common issue)"),
    "topic.cases_linked": ("议题案件调整", "Topic's cases changed"),
    "topic.meeting_recorded": ("议题会议已记录", "Topic meeting recorded"),
    "topic.closed": ("议题已结束", "Topic closed"),
}
PRIORITY_ZH = {"urgent": "紧急", "high": "较急", "normal": "一般"}
DEADLINE_ZH = {"ack": "签收", "resolve": "办结"}


@dataclass(frozen=True)
class Message:
    """A title and a plain-text body."""

    title: str
    body: str


def local_time(when: datetime | None) -> str:
    """A time as staff read it: Shanghai local, to the minute."""
    if when is None:
        return "—"
    return when.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")


def case_link(console_base: str, case_id: str) -> str:
    """The case's page in the closer's staff console."""
    return f"{console_base.rstrip('/')}/console/cases/{case_id}"


def headline(signal: Signal) -> tuple[str, str]:
    """What happened, in Chinese and English."""
    zh, en = HEADLINES.get(signal.event, (signal.event, signal.event))
    if signal.event == "case.escalated" and signal.deadline in DEADLINE_ZH:
        zh = f"{DEADLINE_ZH[signal.deadline]}超时督办"
    if signal.event == "case.report_merged":
        zh = f"共性问题：{signal.distinct_riders} 位骑手上报"
        en = f"Common issue: {signal.distinct_riders} riders reported it"
    if signal.priority == "urgent" or signal.clock == "calendar":
        zh, en = f"【紧急】{zh}", f"[urgent] {en}"
    return zh, en


def render(signal: Signal, j: Jurisdiction, console_base: str, english: bool = True) -> Message:
    """The message of one event for one channel."""
    zh, en = headline(signal)
    category = j.categories.get(signal.category)
    station = j.stations.get(signal.station_id)
    cat_zh = category.name_zh if category else (signal.category or "—")
    title = f"{zh} · {cat_zh}"
    lines = [
        f"类别：{cat_zh}",
        f"地点：{signal.place_name or '—'}",
        f"网格站：{station.name_zh if station else signal.station_id}",
        f"优先级：{PRIORITY_ZH.get(signal.priority, signal.priority)}",
        f"签收时限：{local_time(signal.ack_due)}",
        f"办结时限：{local_time(signal.resolve_due)}（上海时间）",
        f"查看：{case_link(console_base, signal.case_id)}",
    ]
    if english:
        cat_en = category.name_en if category else signal.category
        lines.append(f"{en}: {cat_en}, due {local_time(signal.resolve_due)} (Shanghai)")
    return Message(title, "\n".join(lines))


def topic_link(console_base: str, topic_id: str) -> str:
    """The topic's page in the closer's staff console."""
    return f"{console_base.rstrip('/')}/console/topics/{topic_id}"


def render_topic(signal: Signal, data: Any, console_base: str, english: bool = True) -> Message:
    """The message of a topic (议题) event: what, who takes it up, the outcome once closed; staff text
    only (no rider data is on `topics.events`)."""
    zh, en = headline(signal)
    title_text = getattr(data, "title", None)
    lines = [f"议题：{title_text or signal.case_id}"]
    if getattr(data, "body", None):
        lines.append(f"承办：{data.body}")
    lines.append(f"案件数：{len(getattr(data, 'case_ids', []))}")
    if getattr(data, "decision", None):
        lines.append(f"会议决定：{data.decision}")
    if getattr(data, "outcome", None):
        lines.append(f"结论：{data.outcome}")
    lines.append(f"查看：{topic_link(console_base, signal.case_id)}")
    if english:
        lines.append(f"{en}: {signal.case_id}")
    return Message(f"{zh} · {title_text or signal.case_id}", "\n".join(lines))


def render_digest(titles: Sequence[str], links: Sequence[str], english: bool = True) -> Message:
    """One grouped message for many notifications to one channel (a digest under a flood)."""
    count = len(titles)
    lines = [f"{i}. {t}\n   {link}" for i, (t, link) in enumerate(zip(titles, links, strict=True), 1)]
    if english:
        lines.append(f"{count} notifications grouped into one.")
    return Message(f"【汇总】{count} 条通知", "\n".join(lines))
