"""The layered working calendar: official files, chinese_calendar, the holidays estimate; its data files."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import chinese_calendar
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridloop.settings import REPO_ROOT
from schemas.calendar import CalendarError, CalendarYear, load_calendar_dir, parse_year
from services.closer import calendarcli, calendarstore, sla
from services.closer.calendar import Calendar, Official

SH = ZoneInfo("Asia/Shanghai")
SHIPPED = REPO_ROOT / "data" / "calendar"
CAL = Calendar(calendarstore.shipped(SHIPPED))


def at(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    """A Shanghai wall-clock time."""
    return datetime(y, mo, d, h, mi, tzinfo=SH)


def official_2027() -> CalendarYear:
    """A made-up "published" 2027: New Year 1–3 Jan, Spring Festival 5–12 Feb, make-up Sat 20 Feb."""
    days = [
        {"date": f"2027-01-0{d}", "kind": "day_off", "name_zh": "元旦", "name_en": "New Year's Day"}
        for d in (1, 2, 3)
    ] + [
        {"date": f"2027-02-{d:02}", "kind": "day_off", "name_zh": "春节", "name_en": "Spring Festival"}
        for d in range(5, 13)
    ]
    days.append({"date": "2027-02-20", "kind": "workday", "name_zh": "春节调休上班", "name_en": "make-up"})
    return CalendarYear.model_validate(
        {"year": 2027, "source": {"title": "国务院办公厅关于2027年部分节假日安排的通知"}, "days": days}
    )


def test_the_shipped_years_validate_and_agree_with_chinese_calendar() -> None:
    """2020–2026 ship as files; every day of them answers as chinese_calendar does, from the file."""
    years = load_calendar_dir(SHIPPED)
    assert sorted(years) == [2020, 2021, 2022, 2023, 2024, 2025, 2026]
    for year in years:
        day = date(year, 1, 1)
        while day.year == year:
            assert CAL.is_workday(day) == chinese_calendar.is_workday(day), day
            day += timedelta(days=1)
    assert CAL.day(date(2026, 10, 1)).source == "official:2026.json"
    assert CAL.day(date(2026, 10, 12)).source == "weekday"


def test_2026_make_up_saturdays_are_working_days() -> None:
    """The four make-up Saturdays of 2026 count as working time; an ordinary Saturday does not."""
    saturdays = [d for d in CAL.special_days(2026) if d.working and d.date.weekday() == 5]
    assert [d.date for d in saturdays] == [
        date(2026, 2, 14),
        date(2026, 2, 28),
        date(2026, 5, 9),
        date(2026, 10, 10),
    ]
    assert {d.source for d in saturdays} == {"official:2026.json"}
    assert saturdays[0].name_zh == "春节调休上班"
    work = sla.WorkCalendar(is_workday=CAL.is_workday)
    assert work.add(at(2026, 2, 13, 17), 2) == at(2026, 2, 14, 10)  # Friday evening → the make-up Saturday
    assert work.add(at(2026, 2, 6, 17), 2) == at(2026, 2, 9, 10)  # an ordinary weekend waits for Monday


def test_1_january_2027_is_an_estimated_day_off() -> None:
    """No official 2027 yet and chinese_calendar stops at 2026: the holidays estimate decides."""
    day = CAL.day(date(2027, 1, 1))
    assert (day.working, day.source, day.estimated, day.name_zh) == (False, "estimate:holidays", True, "元旦")
    assert CAL.estimated(2027) and not CAL.estimated(2026)
    plain = CAL.day(date(2027, 1, 4))
    assert (plain.working, plain.source, plain.estimated) == (True, "weekday", True)


def test_spring_festival_2027_is_estimated_off() -> None:
    """Eve (5 Feb) to 10 Feb are off, with the weekend after; nothing else in the first half of February."""
    off = [d for d in range(1, 15) if not CAL.is_workday(date(2027, 2, d))]
    assert off == [5, 6, 7, 8, 9, 10, 13, 14]
    assert {CAL.day(date(2027, 2, d)).source for d in range(5, 11)} == {"estimate:holidays"}
    work = sla.WorkCalendar(is_workday=CAL.is_workday)
    # a sanitation report on the eve's eve at 17:00 with 2 working hours is due after the holiday
    assert work.add(at(2027, 2, 4, 17), 2) == at(2027, 2, 11, 10)


def test_a_report_at_23_59_59_before_the_holiday_waits_for_it_to_end() -> None:
    """The last second of Thursday 4 February 2027 is after hours: the clock starts on 11 February."""
    work = sla.WorkCalendar(is_workday=CAL.is_workday)
    start = datetime(2027, 2, 4, 23, 59, 59, tzinfo=SH)
    assert work.add(start, 2) == at(2027, 2, 11, 11)
    assert work.add(start, 0.25) == at(2027, 2, 11, 9, 15)


def test_an_official_year_overrides_the_estimate() -> None:
    """Importing 2027 changes the answers: 2–3 Jan and 11–12 Feb off, the make-up Saturday worked."""
    cal = CAL.with_year(Official("2027.json", official_2027()))
    assert [CAL.is_workday(date(2027, 2, d)) for d in (11, 12, 20)] == [True, True, False]
    assert [cal.is_workday(date(2027, 2, d)) for d in (11, 12, 20)] == [False, False, True]
    assert cal.day(date(2027, 2, 20)).source == "official:2027.json"
    assert not cal.day(date(2027, 2, 20)).estimated
    assert not cal.estimated(2027)
    assert cal.confirmed_until() == 2027 and CAL.confirmed_until() == 2026
    assert CAL.confirmed_until_timestamp("Asia/Shanghai") == at(2027, 1, 1, 0).timestamp()
    assert cal.confirmed_until_timestamp("Asia/Shanghai") == at(2028, 1, 1, 0).timestamp()
    # set_official swaps the layer of a calendar in use (its cached answers go with it)
    live = Calendar(calendarstore.shipped(SHIPPED))
    assert live.is_workday(date(2027, 2, 11))
    live.set_official(cal.official)
    assert not live.is_workday(date(2027, 2, 11))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(year=2028), "2027-01-01 is not in 2028"),
        (lambda d: d["days"].append(dict(d["days"][0])), "2027-01-01 is listed twice"),
        (lambda d: d["days"][0].update(kind="workday"), "not a Saturday or Sunday"),
        (lambda d: d["days"][0].pop("name_zh"), "days.0.name_zh: Field required"),
        (lambda d: d["source"].pop("title"), "source.title: Field required"),
        (lambda d: d.update(extra=1), "extra: Extra inputs are not permitted"),
    ],
)
def test_a_malformed_year_is_refused_naming_the_file(change: object, message: str) -> None:
    """Every problem names the file and the field."""
    doc = json.loads(official_2027().model_dump_json())
    change(doc)  # type: ignore[operator]
    with pytest.raises(CalendarError) as err:
        parse_year(json.dumps(doc), "upload/2027.json")
    assert str(err.value).startswith("upload/2027.json: ")
    assert message in str(err.value)


def test_a_malformed_shipped_file_stops_the_load(tmp_path: Path) -> None:
    """Start-up refuses a bad file by name: unreadable JSON, or a file named for another year."""
    (tmp_path / "2027.json").write_text("{not json")
    with pytest.raises(CalendarError, match=r"2027\.json: not readable JSON"):
        calendarstore.shipped(tmp_path)
    (tmp_path / "2027.json").unlink()
    (tmp_path / "2026.json").write_text(official_2027().model_dump_json())
    with pytest.raises(CalendarError, match=r"2026\.json: holds year 2027; name it 2027\.json"):
        calendarstore.shipped(tmp_path)


def test_show_prints_every_named_day_with_its_source() -> None:
    """`gridloop calendar show 2027`: estimated, starred, 19 named days; 2026 confirmed with make-up days."""
    lines = calendarcli.show_lines(CAL, 2027)
    assert lines[0].startswith("2027: ESTIMATED (no official schedule; confirmed until the end of 2026).")
    assert len(lines) == 21
    assert lines[1] == (
        "2027-01-01  Fri  day off               estimate:holidays *       元旦 New Year's Day"
    )
    assert all("estimate:holidays *" in line for line in lines[1:-1])
    lines = calendarcli.show_lines(CAL, 2026)
    assert lines[0] == "2026: confirmed."
    assert (
        "2026-02-14  Sat  make-up working day   official:2026.json        "
        "春节调休上班 Spring Festival make-up working day" in lines
    )
    assert len(lines) == 2 + 39


@settings(max_examples=150, deadline=None)
@given(
    start=st.datetimes(
        min_value=datetime(2026, 12, 1), max_value=datetime(2027, 3, 1), timezones=st.just(UTC)
    ),
    hours=st.floats(min_value=0.0, max_value=120.0, allow_nan=False),
    extra=st.sets(st.integers(min_value=0, max_value=150), max_size=30),
)
def test_adding_days_off_never_moves_a_deadline_earlier(
    start: datetime, hours: float, extra: set[int]
) -> None:
    """Whatever days are added as days off, a working-time deadline stays or moves later."""
    off = {date(2026, 12, 1) + timedelta(days=n) for n in extra}
    base = sla.WorkCalendar(is_workday=CAL.is_workday)
    more = sla.WorkCalendar(is_workday=lambda d: d not in off and CAL.is_workday(d))
    assert more.add(start, hours) >= base.add(start, hours)
