"""Issue 12, the reporter's pure parts: client addresses behind proxies, signed rider tokens, tracking
secrets, plain text, http(s) URLs, the 413 message, deep JSON, Open311 dates and XML."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest
from pydantic import ValidationError

from gridloop.errors import ApiError
from gridloop.net import address_key, client_address, parse_networks
from gridloop.settings import Settings
from services.reporter.api.reports import parse_json, report_from_json, too_large
from services.reporter.credentials import (
    new_rider_token,
    plain,
    tracking_hash,
    tracking_key_matches,
    tracking_secret,
    valid_rider_token,
)
from services.reporter.open311 import Open311Error, parse_w3c, to_xml
from services.reporter.place_codes import PlaceIn
from services.reporter.ratelimit import client_ref_for
from services.reporter.reports import ReportIn, scoped_key
from services.reporter.rider_feedback import FeedbackIn

SECRET = "s" * 40


def scope(peer: str, *forwarded: str) -> dict[str, object]:
    """An ASGI scope from a peer with X-Forwarded-For headers."""
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return {"type": "http", "client": (peer, 5555), "headers": headers}


def test_client_address_believes_only_trusted_proxies() -> None:
    """The forwarded address counts only from a trusted proxy, rightmost untrusted hop first."""
    proxies = parse_networks("10.0.0.0/8, 2001:db8:ffff::/48")
    # no trusted proxies (the default): the header is anyone's to write
    assert client_address(scope("198.51.100.9", "203.0.113.7")) == "198.51.100.9"
    # a stranger's header is ignored
    assert client_address(scope("198.51.100.9", "203.0.113.7"), proxies) == "198.51.100.9"
    # our proxy: the client it saw; a hop the client wrote itself on the left is not believed
    assert client_address(scope("10.1.2.3", "6.6.6.6, 203.0.113.7"), proxies) == "203.0.113.7"
    # two proxies of ours in a row, headers repeated
    assert client_address(scope("10.1.2.3", "6.6.6.6", "203.0.113.7, 10.9.9.9"), proxies) == "203.0.113.7"
    # garbage from the client stops the walk at the last hop a proxy of ours vouches for
    assert client_address(scope("10.1.2.3", "nonsense, 10.4.4.4"), proxies) == "10.4.4.4"
    assert client_address(scope("10.1.2.3"), proxies) == "10.1.2.3"
    assert client_address({"type": "http", "headers": []}, proxies) is None
    with pytest.raises(ValueError):
        Settings(trusted_proxies="10.0.0.0/33")


def test_address_key_groups_ipv6_by_64() -> None:
    """Two privacy addresses of one IPv6 /64 are one client for the limits; IPv4 stays per address."""
    a, b = "2001:db8:1:2:aaaa::1", "2001:db8:1:2:bbbb::2"
    assert address_key(a) == address_key(b) == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key(a)
    assert address_key("203.0.113.7") == "203.0.113.7"
    assert address_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_ref_for(a, SECRET) == client_ref_for(b, SECRET)
    assert client_ref_for("203.0.113.7", SECRET) != client_ref_for("203.0.113.8", SECRET)
    assert client_ref_for("127.0.0.1", SECRET) is None


def test_rider_tokens_are_signed_by_the_server() -> None:
    """Only tokens this server issued are valid: made-up, unsigned or re-signed ones are not."""
    token = new_rider_token(SECRET)
    assert valid_rider_token(token, SECRET)
    random, _, mac = token.partition(".")
    assert not valid_rider_token("k" * 24, SECRET)  # what any 16-64 character cookie used to be
    assert not valid_rider_token(random, SECRET)
    assert not valid_rider_token(f"{random[:-1]}{'A' if random[-1] != 'A' else 'B'}.{mac}", SECRET)
    assert not valid_rider_token(token, "another-secret-" + "z" * 30)
    assert not valid_rider_token(None, SECRET)


def test_tracking_secret_is_kept_as_a_keyed_hash() -> None:
    """128 bits per report and token; the stored hash checks it, nothing else does."""
    token = new_rider_token(SECRET)
    key = tracking_secret(token, "r_one", SECRET)
    assert len(key) == 22 and key == tracking_secret(token, "r_one", SECRET)  # a replay answers the same
    assert key != tracking_secret(token, "r_two", SECRET)
    assert key != tracking_secret(new_rider_token(SECRET), "r_one", SECRET)
    stored = tracking_hash(key, SECRET)
    assert key not in stored and len(stored) == 64
    assert tracking_key_matches(key, stored, SECRET)
    assert not tracking_key_matches("r_one", stored, SECRET)
    assert not tracking_key_matches(key, None, SECRET)
    assert not tracking_key_matches(None, stored, SECRET)


def test_idempotency_keys_are_scoped_to_their_caller() -> None:
    """The same key from two callers is two stored keys."""
    assert scoped_key("rider-a", "k1") != scoped_key("rider-b", "k1")
    assert scoped_key("rider-a", "k1") == scoped_key("rider-a", "k1")
    assert len(scoped_key("o311:k_1", "x" * 100)) == 64


def test_control_and_bidi_characters_are_stripped_from_every_input() -> None:
    """C0/C1 controls (but tab and newline) and bidi overrides go from every stored string."""
    dirty = "a\x00b\x07c\x1bd\x7fe\x85f\u202eg\u2066h\u2069i\tj\nk\rl"
    assert plain(dirty) == "abcdefghi\tj\nkl"
    report = ReportIn.model_validate(
        {
            "category": "other",
            "description": dirty,
            "address": "开鲁路\x0b100号\u202e",
            "platform": "美团\x01",
            "rider_no": "\u202aR9\x9b",
            "code": "W7Q2 3QVD\x00",
        }
    )
    assert report.description == "abcdefghi\tj\nkl"
    assert (report.address, report.platform, report.rider_no, report.code) == (
        "开鲁路100号",
        "美团",
        "R9",
        "W7Q2 3QVD",
    )
    assert FeedbackIn.model_validate({"fixed": False, "comment": "x\u202ey\x00"}).comment == "xy"
    place = PlaceIn.model_validate({"name_zh": "北门\x08", "lat": 31.3, "lon": 121.5})
    assert place.name_zh == "北门"


def test_media_url_is_http_or_https_only() -> None:
    """A javascript: (or data:, or schemeless) link is refused; http(s) is kept as sent."""
    for bad in ("javascript:alert(1)", "JAVASCRIPT:alert(1)", "data:text/html,x", "//evil.org/x", "http://"):
        with pytest.raises(ValidationError):
            ReportIn.model_validate({"category": "other", "media_url": bad})
    ok = ReportIn.model_validate({"category": "other", "media_url": "https://example.org/p.jpg"})
    assert ok.media_url == "https://example.org/p.jpg"


def test_the_413_message_states_the_real_cap() -> None:
    """64 KB is said as 64 KB (it used to say 1 MB)."""
    assert too_large(64 * 1024).message == "The request is larger than 64 KB."
    assert too_large(10 * 1024 * 1024).message == "The request is larger than 10 MB."
    assert too_large(1536 * 1024).message == "The request is larger than 1.5 MB."


def test_deeply_nested_json_is_a_400_not_a_recursion_error() -> None:
    """About 30,000 nested brackets are refused as invalid JSON."""
    deep = b"[" * 30000 + b"]" * 30000
    for read in (parse_json, report_from_json):
        with pytest.raises(ApiError) as caught:
            read(deep)
        assert (caught.value.status, caught.value.code) == (400, "invalid_json")


@pytest.mark.parametrize(
    "value", ["9999-12-31T23:59:59-05:00", "0001-01-01", "0001-01-01T00:00:00+05:00", "9999-12-31"]
)
def test_open311_dates_out_of_range_are_400(value: str) -> None:
    """Dates the clock cannot do arithmetic with are the client's error, not an OverflowError."""
    with pytest.raises(Open311Error) as caught:
        parse_w3c(value, "end_date")
    assert caught.value.status == 400


def test_open311_xml_drops_characters_xml_cannot_carry() -> None:
    """A control character stored before the input rules were strict no longer breaks the feed."""
    xml = to_xml("service_requests", [{"address": "开鲁路\x01100号", "description": ""}])
    root = ET.fromstring(xml)
    assert root.find("request/address").text == "开鲁路100号"  # type: ignore[union-attr]
