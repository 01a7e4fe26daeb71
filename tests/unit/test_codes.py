"""Report codes: alphabet, check character properties, normalisation and errors."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codes
from schemas.codes import ALPHABET, CODE_LENGTH, CodeError

bodies = st.text(alphabet=ALPHABET, min_size=CODE_LENGTH - 1, max_size=CODE_LENGTH - 1)


def _substitutions(code: str) -> list[str]:
    """Every code that differs from ``code`` in exactly one character."""
    return [code[:i] + c + code[i + 1 :] for i in range(len(code)) for c in ALPHABET if c != code[i]]


def _transpositions(code: str, adjacent_only: bool) -> list[str]:
    """Every code with two differing characters swapped."""
    out = []
    for i, j in itertools.combinations(range(len(code)), 2):
        if (adjacent_only and j != i + 1) or code[i] == code[j]:
            continue
        chars = list(code)
        chars[i], chars[j] = chars[j], chars[i]
        out.append("".join(chars))
    return out


def test_alphabet_is_prime_sized_unique_and_unambiguous() -> None:
    """29 distinct digits/capitals (a prime), without the look-alikes 0 O 1 I L U Z."""
    n = len(ALPHABET)
    assert n == 29 and all(n % k for k in range(2, n))
    assert len(set(ALPHABET)) == n
    assert not set("0O1ILUZ") & set(ALPHABET)
    assert all(c.isdigit() or c.isupper() for c in ALPHABET) and ALPHABET.isascii()
    assert CODE_LENGTH == 8


def test_weights_make_every_single_error_and_swap_detectable() -> None:
    """The algebra, checked for every position and every pair of values: no error sums to 0."""
    m, weights = codes.MODULUS, range(1, CODE_LENGTH + 1)
    for w in weights:
        for d in range(1, m):
            assert (w * d) % m != 0  # a substitution changes the sum by w * d
    for wi, wj in itertools.combinations(weights, 2):
        for a, b in itertools.permutations(range(m), 2):
            assert ((wi - wj) * (a - b)) % m != 0  # a swap changes it by (wi - wj) * (a - b)


def test_exhaustive_on_all_short_codes() -> None:
    """For every 2-character body, every substitution and every swap of the 3-char code fails."""
    for body in itertools.product(ALPHABET, repeat=2):
        code = "".join(body) + codes.check_char("".join(body))
        assert codes.is_valid(code) is False  # length 3 is not a report code ...
        assert codes._weighted_sum(code) == 0  # ... but the checksum holds
        for wrong in _substitutions(code) + _transpositions(code, adjacent_only=False):
            assert codes._weighted_sum(wrong) != 0, (code, wrong)


@settings(max_examples=300, deadline=None)
@given(bodies)
def test_every_single_substitution_is_detected(body: str) -> None:
    """All 8 x 28 one-character changes of a valid code are invalid."""
    code = body + codes.check_char(body)
    assert codes.is_valid(code)
    for wrong in _substitutions(code):
        assert not codes.is_valid(wrong), (code, wrong)


@settings(max_examples=300, deadline=None)
@given(bodies)
def test_every_transposition_is_detected(body: str) -> None:
    """Swapping two differing characters, adjacent or not, always breaks the check."""
    code = body + codes.check_char(body)
    adjacent = _transpositions(code, adjacent_only=True)
    for wrong in _transpositions(code, adjacent_only=False):
        assert not codes.is_valid(wrong), (code, wrong)
    for wrong in adjacent:
        with pytest.raises(CodeError) as info:
            codes.validate(wrong)
        assert info.value.reason == "check"


@given(st.randoms(use_true_random=False))
def test_new_code_is_valid(rng: random.Random) -> None:
    """Fresh codes are 8 alphabet characters with a correct check character."""
    code = codes.new_code(rng)
    assert len(code) == CODE_LENGTH and codes.is_valid(code)
    assert codes.validate(code) == code


def test_new_code_reproducible_with_seed_and_random_without() -> None:
    """A seeded generator repeats; the default (system) source does not."""
    assert codes.new_code(random.Random(5)) == codes.new_code(random.Random(5))
    assert len({codes.new_code() for _ in range(200)}) == 200


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("abcd2345", "ABCD2345"),
        ("  ab cd-23\t45 ", "ABCD2345"),
        ("ABCD_2345", "ABCD2345"),
        ("ABCD—2345", "ABCD2345"),  # em dash from a Chinese keyboard
        ("ＡＢＣＤ２３４５", "ABCD2345"),  # full-width input
        ("abcd 234z", "ABCD2342"),  # Z is read as 2
        ("OIL10u", "OIL10U"),  # no certain counterpart: left for validate to refuse
        ("", ""),
    ],
)
def test_normalize(typed: str, expected: str) -> None:
    """Case, spaces, separators and full-width forms are folded; only Z is remapped."""
    assert codes.normalize(typed) == expected


def test_validate_accepts_hand_typed_forms() -> None:
    """A valid code typed in lower case, with spaces or a dash, validates to its canonical form."""
    code = codes.new_code(random.Random(1))
    assert codes.validate(code.lower()) == code
    assert codes.validate(f" {code[:4]} - {code[4:]} ") == code
    assert codes.validate(codes.format_code(code)) == code
    assert codes.format_code(code) == f"{code[:4]}-{code[4:]}"


def test_is_valid_does_not_normalize() -> None:
    """is_valid judges the canonical form only."""
    code = codes.new_code(random.Random(2))
    assert codes.is_valid(code)
    assert not codes.is_valid(code.lower()) or code == code.lower()
    assert not codes.is_valid(codes.format_code(code))
    assert not codes.is_valid(code + "2")
    assert not codes.is_valid("")


@pytest.mark.parametrize(
    "typed",
    ["", "ABC", "ABCD23456", "ABCD234O", "ABCD2341", "ABCDI234", "ABCD23#5", "殷行街道二三四五"],
)
def test_validate_format_errors(typed: str) -> None:
    """Wrong length or characters outside the alphabet: reason ``format``, both languages."""
    with pytest.raises(CodeError) as info:
        codes.validate(typed)
    err = info.value
    assert err.reason == "format"
    assert isinstance(err, ValueError)
    assert err.message and err.message_zh
    assert str(err) == err.message


def test_validate_format_error_names_the_bad_character() -> None:
    """The message shows which character is not allowed."""
    with pytest.raises(CodeError) as info:
        codes.validate("ABCD234O")
    assert "'O'" in str(info.value) and "'O'" in info.value.message_zh


def test_validate_check_error() -> None:
    """Right shape, wrong check character: reason ``check`` and a "check the code" message."""
    code = codes.new_code(random.Random(3))
    wrong = code[:-1] + next(c for c in ALPHABET if c != code[-1])
    with pytest.raises(CodeError) as info:
        codes.validate(wrong)
    assert info.value.reason == "check"
    assert "check the code" in str(info.value)
    assert "核对" in info.value.message_zh


def test_check_char_refuses_bad_bodies() -> None:
    """Characters outside the alphabet, or a body too long for distinct weights."""
    with pytest.raises(CodeError) as info:
        codes.check_char("ABC0")
    assert info.value.reason == "format"
    with pytest.raises(ValueError):
        codes.check_char("2" * (codes.MAX_BODY_LENGTH + 1))
    assert codes.check_char("2" * codes.MAX_BODY_LENGTH) in ALPHABET
