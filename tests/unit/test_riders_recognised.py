"""Riders recognised, the pure parts: the rider number's keyed pseudonym, the recognition code, the
preset words and the closer's rule for a thank-you (role, preset, words, case state, once)."""

from __future__ import annotations

import pytest

from schemas.thanks import PRESETS, preset_text
from services.closer.conversation import Unacceptable
from services.closer.thanks import check_thanks
from services.reporter.riders import recognition_code, rider_no_ref

SECRET = "unit-secret-" + "q" * 40


def test_the_pseudonym_is_keyed_normalised_and_per_platform() -> None:
    """Same platform and number (however typed): one pseudonym of 32 hex characters; another
    platform, number or secret: another; no number: none."""
    ref = rider_no_ref("美团", "MT-123", SECRET)
    assert ref is not None and len(ref) == 32 and all(c in "0123456789abcdef" for c in ref)
    assert rider_no_ref("美团", "  mt-123 ", SECRET) == ref
    assert len({ref, rider_no_ref("饿了么", "MT-123", SECRET), rider_no_ref("美团", "MT-124", SECRET)}) == 3
    assert rider_no_ref("美团", "MT-123", "other-" + "q" * 40) != ref
    assert rider_no_ref(None, "MT-123", SECRET) != ref
    assert [rider_no_ref("美团", n, SECRET) for n in (None, "", "   ")] == [None, None, None]


def test_the_recognition_code_is_the_console_rider_tag() -> None:
    """The last six characters of the rider's pseudonym, as the console shows each case's riders."""
    assert recognition_code("00112233445566778899aabbccddeeff") == "ddeeff"
    assert recognition_code(None) is None


def test_presets_in_both_languages() -> None:
    """Every preset has Chinese and English words; an unknown key shows as itself."""
    assert sorted(PRESETS) == ["details", "reported", "safety"]
    assert preset_text("reported", "zh") == "感谢您及时上报，问题已经处理。"
    assert preset_text("reported", "en") == "Thank you for reporting it in time: it has been dealt with."
    assert preset_text("medal", "zh") == "medal"


@pytest.mark.parametrize(
    ("preset", "text", "status", "role", "already", "expected"),
    [
        ("reported", "x", "closed", "admin", False, (403, "forbidden")),
        ("reported", "x", "closed", "viewer", False, (403, "forbidden")),
        ("medal", "x", "closed", "staff", False, (422, "invalid_preset")),
        ("reported", "字" * 201, "closed", "staff", False, (422, "text_too_long")),
        ("reported", "x", "rejected", "supervisor", False, (409, "case_rejected")),
        ("reported", "x", "closed", "staff", True, (409, "already_thanked")),
    ],
)
def test_a_thank_you_that_cannot_be_sent(
    preset: str, text: str, status: str, role: str, already: bool, expected: tuple[int, str]
) -> None:
    """Each refusal with its status and code."""
    with pytest.raises(Unacceptable) as refused:
        check_thanks(preset, text, status, role, already)
    assert (refused.value.status, refused.value.code) == expected


def test_a_thank_you_on_any_live_or_closed_case() -> None:
    """Staff and supervisors thank on an open, resolved or closed case; the words are stripped and
    may be empty; 200 characters are enough."""
    assert check_thanks("safety", "  好样的 ", "new", "staff", False) == "好样的"
    assert check_thanks("details", "", "resolved", "supervisor", False) == ""
    assert check_thanks("reported", "字" * 200, "closed", "staff", False) == "字" * 200
