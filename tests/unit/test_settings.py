"""Production refuses unsafe settings (issue 12); one secret gives each purpose a key of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridloop.settings import (
    MIN_SECRET_BYTES,
    Settings,
    UnsafeSettingsError,
    is_loopback_url,
    refuse_unsafe,
    unsafe_settings,
)

GOOD_SECRET = "Zq4v9Lr2Tx7Wm1Kc8Hb3Nd6Pf0Gs5Jy2Qa7Ue"  # 38 bytes


def prod(**values: object) -> Settings:
    """Settings of a production process (dev mode off whatever the test run's environment says)."""
    return Settings(**{"dev_mode": False, "jwt_secret": GOOD_SECRET, **values})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("what", "values", "problems"),
    [
        ("fresh machine: generated secret, loopback URLs", {"jwt_secret": None}, []),
        ("a long random secret", {}, []),
        ("the old compose default", {"jwt_secret": "change-me-in-production"}, ["published example"]),
        ("the demo password", {"jwt_secret": "gridloop-demo"}, ["published example"]),
        ("empty", {"jwt_secret": ""}, ["GRIDLOOP_JWT_SECRET is empty"]),
        ("short", {"jwt_secret": "x" * (MIN_SECRET_BYTES - 1)}, ["31 bytes; at least 32"]),
        ("32 bytes", {"jwt_secret": "x" * MIN_SECRET_BYTES}, []),
        ("https public URLs", {"public_base_url": "https://r.example.org"}, []),
        (
            "http on a public host",
            {"public_base_url": "http://r.example.org", "closer_public_url": "http://203.0.113.9:8003"},
            ["GRIDLOOP_PUBLIC_BASE_URL is http://", "GRIDLOOP_CLOSER_PUBLIC_URL is http://"],
        ),
        (
            "cookie Secure off outside loopback",
            {"cookie_secure": False, "closer_public_url": "https://s.example.org"},
            ["GRIDLOOP_COOKIE_SECURE is false while the public URLs are not loopback (GRIDLOOP_CLOSER_"],
        ),
        (
            "cookie Secure off on loopback",
            {"cookie_secure": False, "public_base_url": "http://localhost:1"},
            [],
        ),
        (
            "everything at once",
            {"jwt_secret": "secret", "public_base_url": "http://r.example.org", "cookie_secure": False},
            ["published example 'secret'", "GRIDLOOP_PUBLIC_BASE_URL is http://", "GRIDLOOP_COOKIE_SECURE"],
        ),
    ],
)
def test_unsafe_settings(what: str, values: dict[str, object], problems: list[str]) -> None:
    """Each unsafe setting is named once, in order: secret, http URLs, cookie flag."""
    found = unsafe_settings(prod(**values))
    assert len(found) == len(problems), (what, found)
    for message, expected in zip(found, problems, strict=True):
        assert expected in message, (what, message)


def test_loopback_urls() -> None:
    """localhost, 127.0.0.0/8 and ::1 are this machine; names and other addresses are not."""
    assert all(map(is_loopback_url, ["http://localhost:8001", "http://127.0.0.2", "http://[::1]:8003/x"]))
    assert not any(
        map(is_loopback_url, ["http://10.0.0.1", "https://localhost.example.org", "http://0.0.0.0"])
    )


def test_refusal_names_each_problem_unless_dev_mode() -> None:
    """Production stops with every problem listed; dev mode starts and returns them as warnings."""
    bad = {"jwt_secret": "change-me-in-production", "public_base_url": "http://r.example.org"}
    with pytest.raises(UnsafeSettingsError) as refused:
        refuse_unsafe(prod(**bad), "the closer")
    message = str(refused.value)
    assert message.startswith("the closer refuses to start with unsafe settings:\n  - GRIDLOOP_JWT_SECRET")
    assert message.count("\n  - ") == 2 and "GRIDLOOP_DEV=1" in message
    assert len(refuse_unsafe(prod(dev_mode=True, **bad))) == 2
    assert refuse_unsafe(prod()) == []


def test_dev_mode_comes_from_gridloop_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    """GRIDLOOP_DEV switches dev mode on; it is off by default."""
    monkeypatch.delenv("GRIDLOOP_DEV", raising=False)
    assert Settings().dev_mode is False
    monkeypatch.setenv("GRIDLOOP_DEV", "1")
    assert Settings().dev_mode is True


def test_derived_keys_differ_per_purpose(tmp_path: Path) -> None:
    """One secret, a key per purpose: 32 bytes each, stable, different per purpose and per secret."""
    settings = prod()
    purposes = ["csrf", "rider-pseudonym", "address-pseudonym", "rider-token", "tracking"]
    keys = {p: settings.derived_key(p) for p in purposes}
    assert len(set(keys.values())) == len(purposes)
    assert all(len(k) == 32 for k in keys.values())
    assert settings.derived_key("csrf") == prod().derived_key("csrf")
    assert GOOD_SECRET.encode() not in keys.values()
    assert prod(jwt_secret="y" * 40).derived_key("csrf") != keys["csrf"]
    generated = Settings(var_dir=tmp_path, jwt_secret=None)  # keyed by the generated var/jwt.secret
    assert generated.derived_key("csrf") == Settings(var_dir=tmp_path, jwt_secret=None).derived_key("csrf")
    with pytest.raises(ValueError, match="purpose"):
        settings.derived_key("")


def test_a_stack_with_demo_data_is_a_dev_stack(tmp_path: Path) -> None:
    """`gridloop up`, tests and benchmarks load the demo accounts: their services run in dev mode;
    a stack without demo data passes the settings' own choice on."""
    from gridloop.cli import load_demo
    from gridloop.stack import Stack

    demo = Stack(settings=prod(var_dir=tmp_path), demo=load_demo)
    assert demo.settings.dev_mode and demo.service_env("closer")["GRIDLOOP_DEV"] == "1"
    bare = Stack(settings=prod(var_dir=tmp_path))
    assert not bare.settings.dev_mode and bare.service_env("closer")["GRIDLOOP_DEV"] == "0"
