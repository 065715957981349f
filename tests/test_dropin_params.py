"""The drop-in's request reading: every parameter style of docs/gateway-api.md merged into one set,
with the gateway clients' quirks (``customerId``, ``+`` decoded as a space, ints as strings)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import httpx
import pytest

from relay.dropin.params import BadRequest, Params, read_params
from relay.errors import DropinRefused


def multipart(
    fields: dict[str, str], files: dict[str, tuple[str, bytes, str]] | None = None
) -> tuple[str, bytes]:
    """(content type, body) of a multipart form as httpx (like PHP curl) encodes it."""
    request = httpx.Request("POST", "http://x/", data=fields, files=files or {})
    body = request.read()
    return request.headers["content-type"], body


def test_get_query_keeps_the_international_prefix_of_an_unencoded_plus() -> None:
    p = read_params("sendto=+4915752982212&body=Hi+there&device_id=260", "", b"")
    assert p.fields == {"sendto": "+4915752982212", "body": "Hi there", "device_id": "260"}


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("+49+157+52982212", "+49 157 52982212"),  # only the leading + is a prefix
        ("%2B4915752982212", "+4915752982212"),
        ("+491,+492", "+491,+492"),  # each number of a list keeps its prefix
        ("+491%2C+%2B492", "+491, +492"),  # "+" before "%2B": a space, then the prefix
        ("++491", " +491"),  # a run of "+": spaces, then the prefix
        ("+0157", " 0157"),  # no country code starts with 0: a space
        ("015752982212", "015752982212"),
        ("49+157", "49 157"),
    ],
)
def test_plus_in_phone_fields(raw: str, decoded: str) -> None:
    assert read_params(f"sendto={raw}", "", b"").fields["sendto"] == decoded
    assert read_params(f"phone={raw}", "", b"").fields["phone"] == decoded


def test_plus_elsewhere_is_a_space_as_usual() -> None:
    p = read_params("body=+1+day&title=a+b", "", b"")
    assert p.fields == {"body": " 1 day", "title": "a b"}


def test_urlencoded_body_merges_over_the_query_and_names_are_case_insensitive() -> None:
    body = urlencode({"customerId": "19921", "sim": "1", "sendto": "+49 157 52982212"}).encode()
    p = read_params("token=k&sim=0", "application/x-www-form-urlencoded", body)
    assert p.fields == {
        "token": "k",
        "sim": "1",
        "customerid": "19921",
        "sendto": "+49 157 52982212",
    }


def test_urlencoded_body_with_an_unencoded_plus_keeps_the_prefix() -> None:
    p = read_params("", "application/x-www-form-urlencoded", b"sendto=+4915752982212&body=a+b")
    assert p.fields == {"sendto": "+4915752982212", "body": "a b"}


def test_params_in_the_query_of_an_empty_post() -> None:
    p = read_params("token=k&sms_id=7", "application/x-www-form-urlencoded", b"")
    assert p.fields == {"token": "k", "sms_id": "7"}


def test_multipart_fields_and_files() -> None:
    ctype, body = multipart(
        {"token": "k", "sendto": "+4915752982212", "body": "Grüße +1"},
        {"file": ("cat.png", b"\x89PNG....", "image/png")},
    )
    p = read_params("", ctype, body)
    assert p.fields == {"token": "k", "sendto": "+4915752982212", "body": "Grüße +1"}
    assert p.files["file"].filename == "cat.png"
    assert p.files["file"].content_type == "image/png"
    assert p.files["file"].size == 8


def test_json_body_keeps_its_types() -> None:
    body = json.dumps({"token": "k", "smsdata": [{"sendto": "1", "device_id": 260}]}).encode()
    p = read_params("", "application/json", body)
    assert p.fields["smsdata"] == [{"sendto": "1", "device_id": 260}]
    undeclared = read_params("", "", body)  # no Content-Type, shaped like a JSON object
    assert undeclared.fields == p.fields


@pytest.mark.parametrize(
    ("ctype", "body", "why"),
    [
        ("application/json", b"{nope", "not valid JSON"),
        ("application/json", b"[1, 2]", "must be an object"),
        ("application/x-www-form-urlencoded", b"body=\xff\xfe", "not UTF-8"),
        ("application/x-www-form-urlencoded", b"body=%FF%FE", "not UTF-8"),
        ("multipart/form-data", b"--x\r\n", "no parts"),
    ],
)
def test_unreadable_bodies_are_refused_with_a_reason(ctype: str, body: bytes, why: str) -> None:
    with pytest.raises(BadRequest, match=why):
        read_params("", ctype, body)


def test_integer_fields_take_strings_numbers_and_refuse_the_rest() -> None:
    p = Params({"a": "260", "b": 260, "c": 260.0, "d": " 7 ", "e": "x", "f": "", "g": True})
    assert [p.integer(n) for n in "abcd"] == [260, 260, 260, 7]
    assert p.integer("f") is None
    assert p.integer("missing") is None
    for name in "eg":
        with pytest.raises(DropinRefused, match=f"Field '{name}' must be a whole number"):
            p.integer(name)
    with pytest.raises(DropinRefused, match="Field 'missing' is required"):
        p.integer("missing", required=True)


def test_flags() -> None:
    p = Params({"a": "1", "b": "0", "c": 1, "d": "yes", "e": "", "f": "true"})
    assert [p.flag(n) for n in "abcdef"] == [True, False, True, True, False, True]
    assert p.flag("missing") is False
