"""Report codes: the short code printed under each QR code on a lamppost, gate or rider station.

A code is ``CODE_LENGTH`` (8) characters: 7 random body characters and 1 check character, all
from ``ALPHABET``. The alphabet has 29 characters (a prime): the digits 2-9 and the capitals
without the look-alikes ``I L O U`` (1, 0, V) and ``Z`` (2). Riders type codes by hand when a QR
code is dirty or torn, often with gloves on a small screen, so the check character must catch the
usual slips.

Check character: the weighted sum ``sum((i + 1) * value(c_i) for i, c_i in enumerate(code))``
over all 8 characters (the check character included, weight 8) is ``0 (mod 29)``. Because 29 is
prime and the weights 1..8 are distinct and non-zero modulo 29:

- a single substitution changes the sum by ``w * d`` with ``w, d`` non-zero modulo 29, which is
  non-zero modulo a prime: always detected;
- swapping the characters at any two positions ``i, j`` (adjacent or not) changes the sum by
  ``(w_i - w_j) * (a - b)``, again a product of two non-zero residues: always detected.

Normalisation (``normalize``) is what a rider's hand input goes through before validation:
Unicode NFKC (full-width ``ＡＢ１２`` from Chinese input methods becomes ``AB12``), upper case,
spaces, tabs and separators (``-``, ``_``, ``.``, ``·``, dashes) removed, and the one look-alike
whose meaning is certain mapped: ``Z`` -> ``2`` (``Z`` is not in the alphabet; ``2`` is). Other
characters outside the alphabet (``0 O 1 I L U``) are left as they are, because they have no single
counterpart in the alphabet; ``validate`` then reports them as a ``format`` error.
"""

from __future__ import annotations

import random
import secrets
import unicodedata
from typing import Literal

ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXY"
"""The 29 code characters; the index of a character is its value."""

MODULUS = len(ALPHABET)
CODE_LENGTH = 8
"""7 random body characters and 1 check character."""

BODY_LENGTH = CODE_LENGTH - 1
MAX_BODY_LENGTH = MODULUS - 2
"""Longest body ``check_char`` accepts: weights 1..len(body)+1 must stay distinct modulo 29."""

LOOKALIKES: dict[str, str] = {"Z": "2"}
"""Characters outside the alphabet that ``normalize`` maps to the one they are mistaken for."""

_SEPARATORS = frozenset("-_.·‐‑‒–—―")
_VALUES: dict[str, int] = {c: i for i, c in enumerate(ALPHABET)}

CodeErrorReason = Literal["format", "check"]


class CodeError(ValueError):
    """A code of the wrong shape (reason ``format``) or with a wrong check character (``check``)."""

    def __init__(self, reason: CodeErrorReason, message: str, message_zh: str) -> None:
        super().__init__(message)
        self.reason: CodeErrorReason = reason
        self.message = message
        self.message_zh = message_zh


def _format_error(text: str) -> CodeError:
    """The error for a code of the wrong length or with characters outside the alphabet."""
    bad = sorted({c for c in text if c not in _VALUES})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return CodeError(
            "format",
            f"a report code has only the characters {ALPHABET}; not {shown}",
            f"报告码只包含 {ALPHABET} 这些字符，不含 {shown}",
        )
    return CodeError(
        "format",
        f"a report code has {CODE_LENGTH} characters, not {len(text)}",
        f"报告码是 {CODE_LENGTH} 位，输入了 {len(text)} 位",
    )


def _weighted_sum(chars: str) -> int:
    """Sum of (position + 1) * value over the characters, modulo 29."""
    return sum((i + 1) * _VALUES[c] for i, c in enumerate(chars)) % MODULUS


def check_char(body: str) -> str:
    """The check character that makes ``body + check`` valid (CodeError for bad body chars)."""
    if any(c not in _VALUES for c in body):
        raise _format_error(body)
    if len(body) > MAX_BODY_LENGTH:
        raise ValueError(f"a code body has at most {MAX_BODY_LENGTH} characters")
    weight = len(body) + 1
    value = (-_weighted_sum(body) * pow(weight, -1, MODULUS)) % MODULUS
    return ALPHABET[value]


def new_code(rng: random.Random | None = None) -> str:
    """A fresh random code (pass a seeded ``random.Random`` for reproducible codes)."""
    source: random.Random = rng if rng is not None else secrets.SystemRandom()
    body = "".join(source.choice(ALPHABET) for _ in range(BODY_LENGTH))
    return body + check_char(body)


def normalize(text: str) -> str:
    """Canonical form of typed input: NFKC, upper case, no spaces or separators, ``Z`` -> ``2``."""
    folded = unicodedata.normalize("NFKC", text).upper()
    kept = (c for c in folded if not c.isspace() and c not in _SEPARATORS)
    return "".join(LOOKALIKES.get(c, c) for c in kept)


def is_valid(code: str) -> bool:
    """True when ``code`` (already normalized) has the right length, alphabet and check char."""
    return len(code) == CODE_LENGTH and all(c in _VALUES for c in code) and _weighted_sum(code) == 0


def validate(text: str) -> str:
    """Normalize ``text`` and return the code, or raise CodeError (``format`` or ``check``)."""
    code = normalize(text)
    if len(code) != CODE_LENGTH or any(c not in _VALUES for c in code):
        raise _format_error(code)
    if _weighted_sum(code) != 0:
        raise CodeError(
            "check",
            "check the code: one character looks mistyped",
            "请核对报告码：有字符可能输错了",
        )
    return code


def format_code(code: str) -> str:
    """Print form with a dash in the middle (``ABCD-EF23``); ``normalize`` removes the dash."""
    half = len(code) // 2
    return f"{code[:half]}-{code[half:]}"
