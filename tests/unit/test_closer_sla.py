"""SLA arithmetic: holidays, make-up days, nights, weekends, holds; clock modes and street hours."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridloop import cli
from gridloop.settings import REPO_ROOT
from schemas.cases import PRIORITIES
from schemas.reference import load_jurisdiction
from services.closer import sla
from services.closer.lifecycle import Lifecycle
from services.closer.models import Case

SH = ZoneInfo("Asia/Shanghai")
CAL = sla.WorkCalendar("09:00-12:00,13:00-18:00", "Asia/Shanghai")


def at(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    """A Shanghai wall-clock time."""
    return datetime(y, mo, d, h, mi, tzinfo=SH)


def test_the_library_knows_national_day_2026_and_its_make_up_days() -> None:
    """What the calendar says for autumn 2026, which the cases below rely on."""
    assert [chinese_calendar.is_workday(date(2026, 10, d)) for d in range(1, 8)] == [False] * 7
    assert chinese_calendar.is_workday(date(2026, 9, 20))  # a Sunday, worked for the holiday
    assert chinese_calendar.is_workday(date(2026, 10, 10))  # a Saturday, worked for the holiday
    assert not chinese_calendar.is_workday(date(2026, 10, 11))
    assert not chinese_calendar.is_workday(date(2026, 9, 25))  # Mid-autumn


def test_deadline_jumps_the_national_day_holiday() -> None:
    """Submitted the evening before National Day: the clock runs 1 h, stops 7 days, resumes on the 8th."""
    start = at(2026, 9, 30, 17)
    assert CAL.add(start, 4) == at(2026, 10, 8, 12)
    # 1 h (30th) + 8 (8th) + 8 (9th) + 8 (Saturday 10th, a make-up working day) + 8 (12th) + 7 (13th)
    assert CAL.add(start, 40) == at(2026, 10, 13, 17)
    assert CAL.between(start, at(2026, 10, 8, 12)) == pytest.approx(4)


def test_make_up_sunday_counts_and_ordinary_sunday_does_not() -> None:
    """20 Sep 2026 is a Sunday worked for National Day; 11 Oct is an ordinary Sunday."""
    assert CAL.add(at(2026, 9, 19, 10), 4) == at(2026, 9, 20, 14)
    assert CAL.add(at(2026, 10, 11, 10), 4) == at(2026, 10, 12, 14)


def test_nights_weekends_and_the_lunch_break() -> None:
    """Friday night waits for Monday; the lunch hour does not count; a start inside hours counts at once."""
    assert CAL.add(at(2026, 11, 20, 20), 2) == at(2026, 11, 23, 11)
    assert CAL.add(at(2026, 11, 23, 11, 30), 1) == at(2026, 11, 23, 13, 30)
    assert CAL.add(at(2026, 11, 23, 12, 30), 0.5) == at(2026, 11, 23, 13, 30)
    assert CAL.add(at(2026, 11, 23, 17), 1) == at(2026, 11, 23, 18)  # exactly at closing time, not next day
    assert CAL.between(at(2026, 11, 20, 17), at(2026, 11, 23, 10)) == pytest.approx(2)
    assert CAL.between(at(2026, 11, 23, 10), at(2026, 11, 20, 17)) == 0.0


def test_extensions_move_only_the_resolve_deadline() -> None:
    """Two approved extensions add working hours to the resolve deadline; sign-for is unchanged."""
    start = at(2026, 11, 23, 9)
    base = sla.plan(CAL, start, 2, 8)
    extended = sla.plan(CAL, start, 2, 8, extension_hours=16)
    assert base.resolve_due == at(2026, 11, 23, 18)
    assert extended.resolve_due == at(2026, 11, 25, 18)
    assert extended.ack_due == base.ack_due == at(2026, 11, 23, 11)
    # the yellow point is 80 % of the whole allowed time, extensions included: 19.2 h
    assert extended.resolve_warn == at(2026, 11, 25, 13, 12)


def test_a_hold_stops_the_clock() -> None:
    """A hold from Monday 10:00 to Tuesday 10:00 pushes an 8 h deadline to Tuesday evening."""
    start = at(2026, 11, 23, 9)
    hold = [(at(2026, 11, 23, 10), at(2026, 11, 24, 10))]
    p = sla.plan(CAL, start, 8, 16, pauses=hold)
    assert p.ack_due == at(2026, 11, 24, 18)
    assert p.ack_warn == at(2026, 11, 24, 16, 24)
    assert CAL.between(start, at(2026, 11, 24, 11), hold) == pytest.approx(2)
    # a hold over a weekend costs nothing extra; one starting before submission is ignored for the start
    assert CAL.add(at(2026, 11, 20, 17), 2, [(at(2026, 11, 21, 0), at(2026, 11, 22, 23))]) == at(
        2026, 11, 23, 10
    )
    assert CAL.add(at(2026, 11, 23, 9), 0, [(at(2026, 11, 23, 8), at(2026, 11, 23, 11))]) == at(
        2026, 11, 23, 11
    )


def test_colours_green_yellow_red() -> None:
    """Green before 80 %, yellow from 80 %, red from the deadline on; no deadline is green."""
    p = sla.plan(CAL, at(2026, 11, 23, 9), 10, 20)
    assert (p.ack_warn, p.ack_due) == (at(2026, 11, 23, 18), at(2026, 11, 24, 11))
    assert sla.colour(p.ack_due, p.ack_warn, at(2026, 11, 23, 17)) == "green"
    assert sla.colour(p.ack_due, p.ack_warn, at(2026, 11, 23, 18)) == "yellow"
    assert sla.colour(p.ack_due, p.ack_warn, at(2026, 11, 24, 10, 59)) == "yellow"
    assert sla.colour(p.ack_due, p.ack_warn, at(2026, 11, 24, 11)) == "red"
    assert sla.colour(None, None, at(2030, 1, 1, 0)) == "green"


def test_budgets_come_from_the_category_and_priority() -> None:
    """The category's SLA policy per priority; an unknown category gets the fallback."""
    j = load_jurisdiction(REPO_ROOT / "data" / "jurisdictions")
    hazard = j.categories["safety_hazard"]
    assert sla.budget(hazard, "urgent") == sla.Budget(
        hazard.sla.ack_hours["urgent"], hazard.sla.resolve_hours["urgent"]
    )
    assert sla.budget(None, "normal") == sla.Budget(sla.FALLBACK_ACK_HOURS, sla.FALLBACK_RESOLVE_HOURS)


def test_the_year_boundary_2026_2027_skips_new_year_estimated_off() -> None:
    """Past chinese_calendar 1.11's data the estimate still knows 1 January 2027 (a Friday) is off:
    1 h on 31 December, then Monday 4 January (it used to count the 1st as a working day)."""
    assert CAL.add(at(2026, 12, 31, 17), 2) == at(2027, 1, 4, 10)
    assert not CAL.is_workday(date(2027, 1, 1))
    assert CAL.is_workday(date(2027, 1, 4))
    assert CAL.between(at(2026, 12, 31, 17), at(2027, 1, 4, 10)) == pytest.approx(2)


@pytest.mark.parametrize("bad", ["", "18:00-09:00", "09:00-12:00,11:00-13:00", "nine-five"])
def test_bad_working_hours_are_refused(bad: str) -> None:
    """Working hours that cannot be meant are a clear configuration error."""
    with pytest.raises(ValueError):
        sla.parse_hours(bad)


def test_other_working_hours_are_configurable() -> None:
    """An 08:30-11:30, 13:30-17:30 day (7 h) gives other deadlines."""
    cal = sla.WorkCalendar("08:30-11:30,13:30-17:30")
    assert cal.add(at(2026, 11, 23, 8, 30), 7) == at(2026, 11, 23, 17, 30)
    assert cal.add(at(2026, 11, 23, 8, 30), 7.5) == at(2026, 11, 24, 9)


# --- clock modes (issue 15) ----------------------------------------------------------------

J = load_jurisdiction(REPO_ROOT / "data" / "jurisdictions")
SAFETY = {"gas_hazard", "manhole_cover", "road_incident", "fire_lane_blocked", "ebike_flying_wire"}


def test_urgent_and_danger_now_safety_reports_run_on_calendar_time() -> None:
    """categories.json: exactly the five safety categories count urgent and "danger now" around the clock."""
    calendar = {(c.id, p, d) for c in J.categories.values() for p in PRIORITIES for d in (False, True)}
    chosen = {key for key in calendar if sla.clock_for(J.categories[key[0]], key[1], key[2]) == "calendar"}
    assert {c for c, _, _ in chosen} == SAFETY
    assert len(chosen) == 5 * 4  # urgent (with or without danger now), and normal and high with it
    assert sla.clock_for(J.categories["gas_hazard"], "high", False) == "working"
    assert sla.clock_for(J.categories["sanitation"], "urgent", True) == "working"
    assert sla.clock_for(None, "urgent", True) == "working"
    assert sla.budget(J.categories["gas_hazard"], "urgent") == sla.Budget(0.25, 2, "calendar")


def test_a_gas_report_on_friday_night_is_due_the_same_night() -> None:
    """Friday 22:00, urgent gas: sign for by 22:15 and resolve by midnight, not Monday morning."""
    friday = at(2026, 11, 27, 22)
    b = sla.budget(J.categories["gas_hazard"], "urgent")
    p = sla.plan(CAL, friday, b.ack_hours, b.resolve_hours, clock=b.clock)
    assert (p.ack_due, p.ack_warn) == (at(2026, 11, 27, 22, 15), at(2026, 11, 27, 22, 12))
    assert (p.resolve_due, p.resolve_warn) == (at(2026, 11, 28, 0), at(2026, 11, 27, 23, 36))
    # the same budget on working time waits for Monday
    assert sla.plan(CAL, friday, b.ack_hours, b.resolve_hours).ack_due == at(2026, 11, 30, 9, 15)
    # a hold stops calendar time too
    held = sla.plan(
        CAL, friday, 0.25, 2, pauses=[(at(2026, 11, 27, 22, 5), at(2026, 11, 27, 23))], clock="calendar"
    )
    assert held.ack_due == at(2026, 11, 27, 23, 10)


def test_a_sanitation_report_on_the_eve_of_a_holiday_is_due_after_it() -> None:
    """Normal sanitation (8 h to sign for, 24 h to resolve) the evening before National Day 2026."""
    b = sla.budget(J.categories["sanitation"], "normal")
    assert b.clock == "working"
    p = sla.plan(CAL, at(2026, 9, 30, 17), b.ack_hours, b.resolve_hours, clock=b.clock)
    assert p.ack_due == at(2026, 10, 8, 17)  # 1 h on the 30th, 7 on the 8th
    assert p.resolve_due == at(2026, 10, 10, 17)  # 1 + 8 + 8 + 7 (Saturday the 10th is worked)


def spring_festival_2027(day: date) -> bool:
    """A stand-in for the official 2027 calendar: 6-13 February off, Sunday 14 February worked."""
    if date(2027, 2, 6) <= day <= date(2027, 2, 13):
        return False
    return day == date(2027, 2, 14) or day.weekday() < 5


def test_what_if_names_each_day_and_the_source_that_decided_it() -> None:
    """The seam: the calendar's day lookup and its source decide each day a deadline crosses."""
    cal = sla.WorkCalendar(is_workday=spring_festival_2027, day_source=lambda d: f"test-{d.year}")
    w = sla.what_if(cal, J.categories["sanitation"], "normal", False, at(2027, 2, 5, 17))
    assert (w.budget.clock, w.plan.ack_due, w.plan.resolve_due) == (
        "working",
        at(2027, 2, 14, 17),
        at(2027, 2, 16, 17),
    )
    assert [(d.day.day, d.workday, d.source) for d in w.days] == [
        (n, n in (5, 14, 15, 16), "test-2027") for n in range(5, 17)
    ]
    gas = sla.what_if(cal, J.categories["gas_hazard"], "normal", True, at(2027, 2, 5, 22))
    assert (gas.budget.clock, gas.plan.ack_due, gas.plan.resolve_due) == (
        "calendar",
        at(2027, 2, 5, 23),
        at(2027, 2, 6, 6),
    )
    assert [d.day for d in gas.days] == [date(2027, 2, 5), date(2027, 2, 6)]


def test_the_default_day_source_is_the_calendar_without_official_files() -> None:
    """Without the closer's calendar, holidays the library knows are its, later ones the estimate's."""
    assert CAL.day_source(date(2026, 10, 1)) == "chinese_calendar"
    assert CAL.day_source(date(2026, 9, 20)) == "chinese_calendar"  # a make-up Sunday
    assert CAL.day_source(date(2027, 1, 1)) == "estimate:holidays"
    assert not CAL.is_workday(date(2027, 1, 1))
    assert CAL.day_source(date(2026, 12, 31)) == "weekday"  # an ordinary Thursday


@settings(max_examples=300, deadline=None)
@given(
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31)),
    hours=st.floats(min_value=0, max_value=200, allow_nan=False),
    holds=st.lists(
        st.tuples(
            st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 1, 31)),
            st.floats(min_value=0, max_value=500),
        ),
        max_size=3,
    ),
)
def test_calendar_time_is_never_later_than_working_time(
    start: datetime, hours: float, holds: list[tuple[datetime, float]]
) -> None:
    """Every working hour is a calendar hour, so the same budget on calendar time ends no later."""
    pauses: list[sla.Pause] = [
        (a.replace(tzinfo=SH), a.replace(tzinfo=SH) + timedelta(hours=h)) for a, h in holds
    ]
    s = start.replace(tzinfo=SH)
    working = sla.plan(CAL, s, hours / 4, hours, pauses=pauses)
    calendar = sla.plan(CAL, s, hours / 4, hours, pauses=pauses, clock="calendar")
    assert calendar.ack_due <= working.ack_due and calendar.resolve_due <= working.resolve_due
    assert calendar.ack_warn <= working.ack_warn and calendar.resolve_warn <= working.resolve_warn


def test_each_street_counts_its_own_working_hours() -> None:
    """Pengpu works 08:00-16:00 straight: its case is due before Yinhang's; no street counts as the first."""
    streets = dict(J.streets)
    streets["pengpu"] = streets["pengpu"].model_copy(update={"working_hours": "08:00-16:00"})
    j = J.model_copy(update={"streets": streets})
    cals = sla.StreetCalendars(j)
    monday = at(2026, 11, 23, 8)
    assert cals.of("pengpu").add(monday, 8) == at(2026, 11, 23, 16)
    assert cals.of("yinhang").add(monday, 8) == at(2026, 11, 23, 18)
    assert cals.of(None) is cals.of("yinhang") is cals.of("nowhere")

    life = Lifecycle(j, cals, 72)
    cases = {
        street: Case(
            case_id=f"c-{street}",
            station_id="s",
            category="sanitation",
            status="new",
            priority="normal",
            street_id=street,
            submitted_at=monday,
            opened_at=monday,
            updated_at=monday,
        )
        for street in ("pengpu", "yinhang")
    }
    for case in cases.values():
        life.set_budget(case)
        life.refresh_sla(None, case)
    assert (cases["pengpu"].ack_due, cases["yinhang"].ack_due) == (at(2026, 11, 23, 16), at(2026, 11, 23, 18))
    assert {c.clock for c in cases.values()} == {"working"}


def test_a_danger_now_case_records_calendar_time() -> None:
    """The lifecycle fixes the case's clock with its budget: gas flagged "danger now" at normal priority."""
    life = Lifecycle(J, sla.StreetCalendars(J), 72)
    friday = at(2026, 11, 27, 22)
    case = Case(
        case_id="c1",
        station_id="s",
        category="gas_hazard",
        status="new",
        priority="normal",
        danger_now=True,
        street_id="yinhang",
        submitted_at=friday,
        opened_at=friday,
        updated_at=friday,
    )
    life.set_budget(case)
    life.refresh_sla(None, case)
    assert (case.clock, case.ack_hours, case.ack_due, case.due_at) == (
        "calendar",
        1,
        at(2026, 11, 27, 23),
        at(2026, 11, 27, 23),
    )


def test_sla_due_prints_the_deadlines_the_clock_and_each_day(capsys: pytest.CaptureFixture[str]) -> None:
    """`gridloop sla due` for a Friday-night gas leak and a sanitation report over a weekend."""
    argv = [
        "sla",
        "due",
        "--category",
        "gas_hazard",
        "--priority",
        "urgent",
        "--at",
        "2027-02-05T22:00+08:00",
    ]
    assert cli.main([*argv, "--street", "yinhang"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "category   gas_hazard · priority urgent · street yinhang (09:00-12:00,13:00-18:00, Asia/Shanghai)",
        "clock      calendar (24 小时处置: around the clock)",
        "sign-for   0.25 h → 2027-02-05 22:15 (Fri)",
        "resolve    2 h → 2027-02-06 00:00 (Sat)",
        "days (calendar time: every hour of every day counts)",
        # Spring Festival 2027 is not published yet: the estimate decides, and says so
        "  2027-02-05 Fri  day off      estimate:holidays",
        "  2027-02-06 Sat  day off      estimate:holidays",
    ]
    assert cli.main(["sla", "due", "--category", "sanitation", "--at", "2026-09-30T17:00+08:00"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == [
        "category   sanitation · priority normal · street yinhang (09:00-12:00,13:00-18:00, Asia/Shanghai)",
        "clock      working",
        "sign-for   8 h → 2026-10-08 17:00 (Thu)",
        "resolve    24 h → 2026-10-10 17:00 (Sat)",
    ]
    assert out[5:] == [
        f"  2026-{m:02}-{d:02} {wd}  {kind:11}  {source}"
        for m, d, wd, kind, source in [
            (9, 30, "Wed", "working day", "weekday"),
            *(
                (10, n, day, "day off", "official:2026.json")
                for n, day in zip(range(1, 8), ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"], strict=True)
            ),
            (10, 8, "Thu", "working day", "weekday"),
            (10, 9, "Fri", "working day", "weekday"),
            (10, 10, "Sat", "working day", "official:2026.json"),  # a make-up Saturday
        ]
    ]
    # "danger now" without a priority is urgent, as the router decides; calendar time
    assert (
        cli.main(["sla", "due", "--category", "manhole_cover", "--danger-now", "--at", "2026-11-28T03:00"])
        == 0
    )
    assert capsys.readouterr().out.splitlines()[1:4] == [
        "clock      calendar (24 小时处置: around the clock)",
        "sign-for   0.5 h → 2026-11-28 03:30 (Sat)",
        "resolve    4 h → 2026-11-28 07:00 (Sat)",
    ]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--category", "gas"], "no category 'gas'"),
        (["--category", "gas_hazard", "--street", "nowhere"], "no street 'nowhere'"),
        (["--category", "gas_hazard", "--at", "Friday night"], "is not an ISO 8601 time"),
    ],
)
def test_sla_due_refuses_unknown_input(
    args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown category or street, or a time that cannot be read: exit 2 and say why."""
    assert cli.main(["sla", "due", *args]) == 2
    assert words in capsys.readouterr().err
