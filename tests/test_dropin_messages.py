"""Drop-in send requests as relay messages: comma lists fanned out, the gateway's ways of
writing values, addalotofsms from ``datajson`` or a JSON body, and the answer shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from relay.dropin import messages
from relay.dropin.answers import device_record, device_status, refused, saved
from relay.dropin.dates import date_object, parse_wall
from relay.dropin.params import Params
from relay.errors import DropinRefused, ValidationError

PARIS = ZoneInfo("Europe/Paris")


def test_a_comma_list_fans_out_to_one_message_each_in_order() -> None:
    batch = messages.single(
        Params({"sendto": "+491, +492,,+493,", "body": "Hi", "device_id": "260"}), PARIS
    )
    assert [i["sendto"] for i in batch.items] == ["+491", "+492", "+493"]
    assert all(i["body"] == "Hi" and i["device_id"] == "260" for i in batch.items)
    assert batch.origins[1] == "recipient 2 (+492): "


def test_one_recipient_has_no_origin_in_its_errors() -> None:
    batch = messages.single(Params({"sendto": "+491", "body": "x", "device_id": 1}), PARIS)
    assert batch.origins == [""]
    exc = ValidationError("sim", "is 9; must be between 0 and 5", index=0)
    assert str(batch.refusal(exc)) == "Field 'sim' is 9; must be between 0 and 5"


@pytest.mark.parametrize("sendto", [None, "", " , ,", True])
def test_no_recipient_is_refused(sendto: object) -> None:
    with pytest.raises(DropinRefused, match="Field 'sendto' is required"):
        messages.single(Params({"sendto": sendto, "body": "x", "device_id": 1}), PARIS)


def test_empty_optional_fields_mean_not_given_and_words_are_flags() -> None:
    fields = {"sendto": "1", "body": 5, "device_id": "", "sim": "", "customerid": " "}
    item = messages.single(Params({**fields, "urgent": "yes", "timetosend": ""}), PARIS).items[0]
    assert item == {"sendto": "1", "body": "5", "device_id": None, "urgent": "1"}


@pytest.mark.parametrize("now", ["0", 0, "0 "])
def test_timetosend_zero_means_now(now: object) -> None:
    fields = {"sendto": "1", "body": "x", "device_id": 1, "timetosend": now}
    assert "timetosend" not in messages.single(Params(fields), PARIS).items[0]


def test_wall_clock_timetosend_is_read_in_the_dropin_zone() -> None:
    fields = {"sendto": "1", "body": "x", "device_id": 1, "timetosend": "2031-08-01 12:00"}
    when = messages.single(Params(fields), PARIS).items[0]["timetosend"]
    assert when == datetime(2031, 8, 1, 10, 0, tzinfo=UTC)  # 12:00 in Paris, summer time
    iso = {**fields, "timetosend": "2031-08-01T12:00:00+00:00"}
    assert messages.single(Params(iso), PARIS).items[0]["timetosend"] == iso["timetosend"]


def test_bulk_from_datajson_with_fan_out_and_origins() -> None:
    data = {
        "token": "k",
        "smsdata": [
            {"sendto": "+491", "body": "a", "device_id": "260", "sim": 0, "urgent": "1"},
            {"Sendto": "+492,+493", "body": "b", "device_id": 260, "customerId": 12},
        ],
    }
    token, batch = messages.bulk(Params({"datajson": json.dumps(data)}), PARIS)
    assert token == "k"
    assert [i["sendto"] for i in batch.items] == ["+491", "+492", "+493"]
    assert batch.items[2]["customerid"] == 12
    assert batch.origins == ["smsdata[0]: ", "smsdata[1]: ", "smsdata[1]: "]
    exc = ValidationError("sendto", "is empty", index=2)
    assert str(batch.refusal(exc)) == "smsdata[1]: Field 'sendto' is empty"


def test_bulk_from_a_raw_json_body_and_a_token_beside_datajson() -> None:
    body = {"token": "k", "smsdata": [{"sendto": "1", "body": "a", "device_id": 1}]}
    token, batch = messages.bulk(Params(body), PARIS)
    assert token == "k" and len(batch.items) == 1
    beside = {"token": "t2", "datajson": json.dumps({"smsdata": body["smsdata"]})}
    assert messages.bulk(Params(beside), PARIS)[0] == "t2"


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({}, "Field 'datajson' is required"),
        ({"datajson": "{nope"}, "not valid JSON"),
        ({"datajson": "[1]"}, "must be a JSON object"),
        ({"datajson": '{"smsdata": []}'}, "non-empty list"),
        ({"datajson": '{"smsdata": {"a": 1}}'}, "non-empty list"),
        ({"datajson": '{"smsdata": [1]}'}, r"smsdata\[0\]: must be an object"),
        ({"datajson": '{"smsdata": [{"body": "x"}]}'}, r"smsdata\[0\]: Field 'sendto'"),
    ],
)
def test_bad_bulk_requests_are_refused(fields: dict[str, str], why: str) -> None:
    with pytest.raises(DropinRefused, match=why):
        messages.bulk(Params(fields), PARIS)


def test_more_than_the_maximum_messages_is_refused() -> None:
    numbers = ",".join(str(100000 + i) for i in range(messages.MAX_MESSAGES + 1))
    with pytest.raises(DropinRefused, match="at most 1000"):
        messages.single(Params({"sendto": numbers, "body": "x", "device_id": 1}), PARIS)


# --- dates and answer shapes -----------------------------------------------------------------


def test_request_dates_and_date_objects() -> None:
    assert parse_wall("2024-05-01", PARIS) == datetime(2024, 5, 1, tzinfo=PARIS)
    end = parse_wall("2024-05-01", PARIS, end_of_day=True)
    assert end == datetime(2024, 5, 1, 23, 59, 59, tzinfo=PARIS)
    assert parse_wall("2024-05-01 10:11", PARIS) == datetime(2024, 5, 1, 10, 11, tzinfo=PARIS)
    assert parse_wall("01.05.2024", PARIS) is None
    ms = round(datetime(2023, 11, 2, 21, 44, 43, 120000, tzinfo=UTC).timestamp() * 1000)
    assert date_object(ms, PARIS) == {
        "date": "2023-11-02 22:44:43.120000",
        "timezone_type": 3,
        "timezone": "Europe/Paris",
    }
    assert date_object(None, PARIS) is None


def test_refusals_and_saves_in_the_gateway_shapes() -> None:
    assert refused("Wrong token") == {"error": 1, "message": "Wrong token"}
    assert saved(7) == {"error": 0, "sms_id": 7, "message": "Sms has been saved successfully"}
    assert saved() == {"error": 0, "message": "Sms has been saved successfully"}


def test_devices_rebuilt_from_the_stored_sync() -> None:
    stored = {
        "id": 260,
        "title": None,
        "lastseen": "2024-05-01T10:00:00+00:00",
        "created": "2020-01-20T14:01:05+00:00",
        "siminfo": [{"slot": 0, "iccid": "894", "number": "+49", "roaming": True}],
        "delaybetweeneachsms": 5.0,
        "delaybetweenrequest": 0.5,
        "online": True,
    }
    record = device_record(stored, ZoneInfo("UTC"))
    assert record["lastseen"]["date"] == "2024-05-01 10:00:00.000000"
    assert record["lastseenhumanformat"] == "01.05.2024 10:00:00"
    assert record["siminfo"] == [
        {
            "Slot": "0",
            "IccId": "894",
            "Number": "+49",
            "Roaming": "1",
            "CountryIso": None,
            "CarrierName": None,
        }
    ]
    assert (record["delaybetweeneachsms"], record["delaybetweenrequest"]) == (5, 0.5)
    now = round(datetime(2024, 5, 1, 10, 1, 40, tzinfo=UTC).timestamp() * 1000)
    status = device_status(stored, now, ZoneInfo("UTC"))
    assert status["diffseconds"] == 100 and status["title"] == "" and status["device_id"] == 260
    never = device_status({"id": 3}, now, ZoneInfo("UTC"))
    assert never["lastseen"]["date"] == "1970-01-01 00:00:00.000000"
    assert never["online"] is False
