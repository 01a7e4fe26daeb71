"""Who is on duty (值班) at an instant, whether an instant is out of hours, and the roster CSV."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from gridloop.settings import REPO_ROOT
from schemas.reference import Jurisdiction, load_jurisdiction
from services.closer import duty
from services.closer.sla import WorkCalendar

SH = ZoneInfo("Asia/Shanghai")
FRIDAY = date(2026, 11, 27)


def local(d: date, h: int, m: int = 0) -> datetime:
    """A Shanghai wall-clock time in UTC."""
    return datetime.combine(d, time(h, m), SH).astimezone(UTC)


@pytest.fixture(scope="module")
def j() -> Jurisdiction:
    """The shipped streets."""
    return load_jurisdiction(REPO_ROOT / "data" / "jurisdictions")


def night(station: str = "yh-s2", ident: int = 1) -> duty.Shift:
    """Friday 18:00 to Saturday 09:00 for yinhang."""
    lo, hi = duty.span(FRIDAY, time(18), time(9), SH)
    return duty.Shift("yinhang", lo, hi, station, None, ident)


def test_no_roster_means_the_centre_is_on_duty() -> None:
    on = duty.on_duty([], "yinhang", "yh-centre", local(FRIDAY, 22))
    assert on == duty.OnDuty("yinhang", "yh-centre", None, "centre", None)
    # another street's shift does not count for this one
    other = duty.Shift("pengpu", local(FRIDAY, 18), local(FRIDAY, 23), "pp-s1")
    assert duty.on_duty([other], "yinhang", "yh-centre", local(FRIDAY, 22)).source == "centre"


def test_a_night_shift_runs_across_midnight() -> None:
    shift = night()
    assert (shift.start, shift.end) == (local(FRIDAY, 18), local(date(2026, 11, 28), 9))
    for at in (
        local(FRIDAY, 18),
        local(FRIDAY, 23, 59),
        local(date(2026, 11, 28), 2),
        local(date(2026, 11, 28), 8, 59),
    ):
        on = duty.on_duty([shift], "yinhang", "yh-centre", at)
        assert (on.station_id, on.source, on.until) == ("yh-s2", "roster", local(date(2026, 11, 28), 9))
    for at in (local(FRIDAY, 17, 59), local(date(2026, 11, 28), 9)):  # the end is excluded
        assert duty.on_duty([shift], "yinhang", "yh-centre", at).station_id == "yh-centre"


def test_24_00_ends_at_midnight_and_a_later_shift_overrides() -> None:
    lo, hi = duty.span(FRIDAY, time(0), None, SH)
    assert (lo, hi) == (local(FRIDAY, 0), local(date(2026, 11, 28), 0))
    day = duty.Shift("yinhang", lo, hi, None, "yh-s3", 1)
    cover = duty.Shift("yinhang", local(FRIDAY, 20), local(FRIDAY, 23), "yh-s4", None, 2)
    assert duty.on_duty([day, cover], "yinhang", "yh-centre", local(FRIDAY, 21)).label == "yh-s4"
    assert duty.on_duty([day, cover], "yinhang", "yh-centre", local(FRIDAY, 23, 30)).label == "yh-s3"
    same_start = duty.Shift("yinhang", lo, hi, "yh-s5", None, 3)  # equal starts: the later entry
    assert duty.on_duty([same_start, day], "yinhang", "yh-centre", local(FRIDAY, 10)).label == "yh-s5"


def test_out_of_hours_and_which_cases_go_to_duty() -> None:
    cal = WorkCalendar("09:00-12:00,13:00-18:00")
    monday = date(2026, 11, 30)
    assert not duty.out_of_hours(cal, local(monday, 9))
    assert not duty.out_of_hours(cal, local(monday, 17, 59))
    assert duty.out_of_hours(cal, local(monday, 12, 30))  # lunch
    assert duty.out_of_hours(cal, local(monday, 18))
    assert duty.out_of_hours(cal, local(FRIDAY, 22))
    assert duty.out_of_hours(cal, local(date(2026, 11, 28), 10))  # Saturday
    assert duty.out_of_hours(cal, local(date(2026, 10, 5), 10))  # National Day holiday, a Monday
    assert not duty.out_of_hours(cal, local(date(2026, 9, 20), 10))  # a 2026 make-up Sunday (调休上班)
    assert duty.goes_to_duty("calendar", cal, local(FRIDAY, 22))
    assert not duty.goes_to_duty("calendar", cal, local(monday, 10))
    assert not duty.goes_to_duty("working", cal, local(FRIDAY, 22))  # a working-time case never does


GOOD = """street,date,start,end,station,staff
yinhang,2026-11-27,18:00,09:00,yh-s2,
yinhang,2026-11-28,09:00,24:00,,yh-s3
"""


def test_a_good_roster_file(j: Jurisdiction) -> None:
    shifts = duty.parse_csv(GOOD, j, {"yh-s3"}, SH)
    assert shifts == [
        duty.Shift("yinhang", local(FRIDAY, 18), local(date(2026, 11, 28), 9), "yh-s2", None),
        duty.Shift("yinhang", local(date(2026, 11, 28), 9), local(date(2026, 11, 29), 0), None, "yh-s3"),
    ]


def test_bad_rows_are_named_by_line_and_nothing_is_taken(j: Jurisdiction) -> None:
    bad = (
        GOOD
        + "yinhang,2026-11-29,25:00,09:00,yh-s2,\n"  # line 4
        + "yinhang,2026-11-29,18:00,09:00,pp-s1,\n"  # line 5: another street's station
        + "yinhang,2026-11-29,18:00,09:00,yh-s2,yh-s3\n"  # line 6: both
        + "yinhang,2026-11-29,18:00,09:00,,nobody\n"  # line 7
        + "mars,2026-11-29,18:00,09:00,yh-s2,\n"  # line 8
    )
    with pytest.raises(duty.RosterError) as err:
        duty.parse_csv(bad, j, {"yh-s3"}, SH)
    assert err.value.problems == [
        "line 4: date must be YYYY-MM-DD and start, end HH:MM",
        "line 5: station 'pp-s1' is not a station of 'yinhang'",
        "line 6: give exactly one of station and staff",
        "line 7: no active staff account 'nobody'",
        "line 8: unknown street 'mars'",
        "line 8: station 'yh-s2' is not a station of 'mars'",
    ]
    with pytest.raises(duty.RosterError) as err:
        duty.parse_csv(GOOD, j, {"yh-s3"}, SH, street="pengpu")
    assert err.value.problems == [
        "line 2: the row is for 'yinhang', not 'pengpu'",
        "line 3: the row is for 'yinhang', not 'pengpu'",
    ]
    with pytest.raises(duty.RosterError) as err:
        duty.parse_csv("street,day,start,end,station,staff\n", j, set(), SH)
    assert err.value.problems == ["line 1: the header must be street,date,start,end,station,staff"]
    with pytest.raises(duty.RosterError) as err:
        duty.parse_csv("street,date,start,end,station,staff\n", j, set(), SH)
    assert err.value.problems == ["the file has no shifts"]
