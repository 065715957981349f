"""The gateway answer models against every sample answer of docs/gateway-api.md
(tests/data/api_samples/), plus the quirks docs/gateway-api.md lists: date kinds, urgent and
customerid spellings, collections keyed by id or empty.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError as PydanticValidationError

from relay.gateway import Device, DeviceStatus, OutgoingSms, SmsList, SmsRecord, SmsStatus
from relay.gateway.dates import (
    format_paket_time,
    format_request_datetime,
    parse_gateway_datetime,
    resolve_zone,
)
from relay.gateway.forms import id_field, token_field
from relay.gateway.models import DeviceList

SAMPLES = Path(__file__).parent / "data" / "api_samples"
PARIS = ZoneInfo("Europe/Paris")


def sample(name: str) -> Any:
    return json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))


def test_every_sample_file_is_used() -> None:
    used = {path.stem for path in SAMPLES.glob("*.json")}
    assert used == set(SAMPLE_NAMES)


# --- getallsms ----------------------------------------------------------------------


def test_seed_getallsms_keyed_object_becomes_list_in_gateway_order() -> None:
    answer = SmsList.model_validate(sample("seed_getallsms"))
    assert [r.id for r in answer.records] == [62050971, 62051117]
    assert answer.count == 2  # no count in the seed sample: the records counted
    first, second = answer.records
    assert first.sendto == "+4912312312332"
    assert first.body == "Hello! Thank you for Order! "
    assert first.customerid is None
    assert (first.status, first.statustitle) == (2, "sending")
    assert first.deviceid == 11231
    assert first.urgent is False
    assert first.created == datetime(2023, 11, 2, 22, 44, 43, tzinfo=PARIS)
    assert first.created is not None and first.created.utcoffset() == timedelta(hours=1)
    assert first.senttime is None and first.timetosend is None
    assert first.paketid is None and first.pakettitle is None and first.paketbody is None
    assert first.sim is None
    assert (second.status, second.statustitle) == (7, "delivered")


def test_apimd_getallsms_full_record() -> None:
    answer = SmsList.model_validate(sample("apimd_getallsms_ok"))
    assert answer.count == 1 and not answer.more_available
    (record,) = answer.records
    berlin = ZoneInfo("Europe/Berlin")
    assert record.customerid == 122
    assert record.urgent is True
    assert record.sim == 1
    assert record.senttime == datetime(2019, 7, 1, 23, 50, 9, tzinfo=berlin)
    assert record.timetosend == datetime(2019, 7, 1, 23, 50, tzinfo=berlin)


def quirk(record_id: int) -> SmsRecord:
    records = SmsList.model_validate(sample("quirks_getallsms")).records
    return next(r for r in records if r.id == record_id)


@pytest.mark.parametrize(
    ("record_id", "urgent"),
    [(101, False), (102, True), (103, False), (104, False), (105, True), (106, False), (107, True)],
)
def test_urgent_null_bool_int_and_string(record_id: int, urgent: bool) -> None:
    assert quirk(record_id).urgent is urgent


@pytest.mark.parametrize(
    ("record_id", "customerid"), [(101, None), (102, None), (103, None), (104, 122), (105, 122)]
)
def test_customerid_null_and_zero_mean_none(record_id: int, customerid: int | None) -> None:
    assert quirk(record_id).customerid == customerid


def test_date_timezone_type_1_is_an_offset() -> None:
    created = quirk(106).created
    assert created == datetime(2023, 11, 2, 22, 44, 43, tzinfo=timezone(timedelta(hours=2)))
    assert created is not None and created.utcoffset() == timedelta(hours=2)


def test_date_timezone_type_2_is_an_abbreviation() -> None:
    created = quirk(107).created
    assert created is not None and created.utcoffset() == timedelta(hours=1)
    assert created == datetime(2023, 11, 2, 21, 44, 43, tzinfo=UTC)


@pytest.mark.parametrize("record_id", [108, 110])
def test_unknown_zones_fall_back_to_utc(record_id: int) -> None:
    assert quirk(record_id).created == datetime(2023, 11, 2, 22, 44, 43, tzinfo=UTC)


def test_strings_for_numbers_plain_date_string_and_extra_fields() -> None:
    record = quirk(109)
    assert (record.status, record.deviceid, record.sim) == (7, 260, 1)
    assert record.created == datetime(2023, 11, 2, 22, 44, 43, tzinfo=UTC)
    assert not hasattr(record, "extra_field")


def test_record_without_id_takes_its_key_and_count_may_exceed_records() -> None:
    answer = SmsList.model_validate(sample("quirks_getallsms"))
    assert [r.id for r in answer.records] == list(range(101, 112))
    assert answer.count == 25
    assert answer.more_available


@pytest.mark.parametrize(
    "payload",
    [
        sample("quirks_getallsms_empty"),
        {"error": 0, "smss": {}, "count": 0},
        {"error": 0, "smss": None},
        {"error": 0, "message": "Ok"},
    ],
)
def test_empty_or_missing_smss(payload: dict[str, Any]) -> None:
    answer = SmsList.model_validate(payload)
    assert answer.records == [] and answer.count == 0 and not answer.more_available


def test_onlycount_answer_has_count_and_no_records() -> None:
    answer = SmsList.model_validate(sample("quirks_getallsms_onlycount"))
    assert answer.count == 42 and answer.records == [] and answer.more_available


def test_smss_as_a_list() -> None:
    smss = list(sample("seed_getallsms")["smss"].values())
    answer = SmsList.model_validate({"error": 0, "smss": smss, "count": 2})
    assert [r.id for r in answer.records] == [62050971, 62051117]


@pytest.mark.parametrize(
    "payload",
    [
        {"smss": {"1": {"id": 1, "sendto": "x"}}},  # no status
        {"smss": "garbage"},
        {"smss": {"1": {"id": "not a number", "status": 1}}},
    ],
)
def test_records_of_a_wrong_shape_are_refused(payload: dict[str, Any]) -> None:
    with pytest.raises(PydanticValidationError):
        SmsList.model_validate(payload)


# --- getsmsstatus, getdevicestatus -------------------------------------------------------


def test_apimd_getsmsstatus() -> None:
    status = SmsStatus.model_validate(sample("apimd_getsmsstatus_ok"))
    assert status == SmsStatus(sms_id=62807347, status=1, status_description="New")


def test_apimd_getdevicestatus() -> None:
    status = DeviceStatus.model_validate(sample("apimd_getdevicestatus_ok"))
    assert status.online is False
    assert status.device_id == 260
    assert status.diffseconds == 28851900
    assert status.title == "Samsung A10"
    assert status.lastseen == datetime(2019, 7, 1, 23, 50, tzinfo=ZoneInfo("Europe/Berlin"))


def test_devicestatus_liberal_types() -> None:
    status = DeviceStatus.model_validate(
        {"online": "1", "device_id": "260", "lastseen": None, "diffseconds": "12.6"}
    )
    assert (status.online, status.device_id, status.diffseconds) == (True, 260, 13)
    assert status.lastseen is None and status.title is None


# --- getalldevices ------------------------------------------------------------------------


def test_seed_getalldevices() -> None:
    answer = DeviceList.model_validate(sample("seed_getalldevices"))
    assert answer.count == 2
    emulator, sdk = answer.devices
    assert isinstance(emulator, Device)
    assert (emulator.id, emulator.title) == (1576, "AOSP_on_IA_Emulator")
    assert emulator.number is None
    assert emulator.imei == "358240051111110"
    assert emulator.created == datetime(2020, 3, 28, 20, 10, 29, tzinfo=UTC)
    assert emulator.lastseen == datetime(2020, 4, 23, 17, 2, 21, tzinfo=UTC)
    assert emulator.serialnumber == "EMULATOR30X0X5X0"
    (sim,) = emulator.siminfo
    assert sim.slot == 0
    assert sim.iccid == "89014103211118510720"
    assert sim.number == "15555215554"  # " 15555215554": a "+" decoded as a space upstream
    assert sim.roaming is False
    assert (sim.country_iso, sim.carrier_name) == ("us", "Android (T-Mobile)")
    assert emulator.appversion == "12.1.21"
    assert emulator.isappversionactual is False
    assert emulator.delaybetweeneachsms is None
    assert emulator.delaybetweenrequest == 1.0
    assert emulator.subscription is True
    assert sdk.imei is None  # the gateway writes the string "null"
    assert sdk.siminfo[0].roaming is True
    assert (sdk.delaybetweeneachsms, sdk.delaybetweenrequest) == (5.0, 10.0)
    assert sdk.subscription is False


@pytest.mark.parametrize("empty", [[], {}, None])
def test_no_devices(empty: Any) -> None:
    assert DeviceList.model_validate({"count": 0, "device": empty}).devices == []


def test_devices_missing_entirely_is_a_wrong_shape() -> None:
    with pytest.raises(PydanticValidationError):
        DeviceList.model_validate({"error": 0, "message": "OK"})


def test_device_siminfo_variants() -> None:
    base = {"id": "7", "delaybetweeneachsms": "2.5", "delaybetweenrequest": ""}
    sim = {"slot": 1, "iccid": "8949", "roaming": "1"}
    assert Device.model_validate({**base, "siminfo": None}).siminfo == []
    assert Device.model_validate({**base, "siminfo": json.dumps([sim])}).siminfo[0].slot == 1
    assert Device.model_validate({**base, "siminfo": {"1": sim}}).siminfo[0].roaming is True
    device = Device.model_validate({**base, "siminfo": sim})
    assert (device.id, device.delaybetweeneachsms, device.delaybetweenrequest) == (7, 2.5, None)


# --- small answers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key", "expected"),
    [
        ("apimd_addsms_ok", "sms_id", 62807347),
        ("seed_addsms_ok", "sms_id", 62807347),
        ("apimd_savetag_ok", "tag_id", 1009),
        ("seed_savetag_ok", "tag_id", 8303),
        ("apimd_savecontact_ok", "contact_id", 566706),
        ("seed_savecontact_ok", "contact_id", 15954765),
        ("seed_savepaket_ok", "paket_id", 4711),
    ],
)
def test_id_answers(name: str, key: str, expected: int) -> None:
    assert id_field(key)(sample(name)) == expected


@pytest.mark.parametrize(
    "payload", [{"error": 0}, {"sms_id": 0}, {"sms_id": "x"}, {"sms_id": True}]
)
def test_id_answer_without_a_usable_id(payload: Any) -> None:
    with pytest.raises(ValueError, match="sms_id"):
        id_field("sms_id")(payload)


def test_bare_number_id_answer() -> None:
    assert id_field("paket_id")(4711) == 4711
    assert id_field("paket_id")("4711") == 4711


def test_token_answer() -> None:
    assert token_field(sample("apimd_gettoken_ok")) == "df427bfcf113c9a21c67718035076b5b"
    with pytest.raises(ValueError):
        token_field(sample("apimd_gettoken_error"))


# --- dates ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0000-00-00 00:00:00", None),
        ({"date": None, "timezone_type": 3, "timezone": "UTC"}, None),
        ({"date": "2023-11-02 22:44:43.000000", "timezone_type": 3, "timezone": "Europe/Paris"},
         datetime(2023, 11, 2, 22, 44, 43, tzinfo=PARIS)),
        ({"date": "2023-07-02 22:44:43.000000", "timezone_type": 1, "timezone": "-05:30"},
         datetime(2023, 7, 3, 4, 14, 43, tzinfo=UTC)),
        ({"date": "2023-07-02 22:44:43.000000", "timezone_type": 2, "timezone": "CEST"},
         datetime(2023, 7, 2, 20, 44, 43, tzinfo=UTC)),
        ({"date": "2023-07-02 22:44:43.000000", "timezone_type": 2, "timezone": "UTC"},
         datetime(2023, 7, 2, 22, 44, 43, tzinfo=UTC)),
        ({"date": "2023-07-02 22:44:43.000000"}, datetime(2023, 7, 2, 22, 44, 43, tzinfo=UTC)),
        ("2023-07-02 22:44:43", datetime(2023, 7, 2, 22, 44, 43, tzinfo=UTC)),
        ("2023-07-02T22:44:43+02:00", datetime(2023, 7, 2, 20, 44, 43, tzinfo=UTC)),
        (1_700_000_000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    ],
)  # fmt: skip
def test_parse_gateway_datetime(value: Any, expected: datetime | None) -> None:
    parsed = parse_gateway_datetime(value)
    assert parsed == expected
    assert parsed is None or parsed.tzinfo is not None


@pytest.mark.parametrize("value", ["yesterday", True, ["2023-01-01"]])
def test_parse_gateway_datetime_refuses_garbage(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_gateway_datetime(value)


def test_resolve_zone_tries_every_kind() -> None:
    assert resolve_zone("Europe/Paris", 1) == PARIS  # wrong kind declared: still found
    assert resolve_zone("+0100", 3) == timezone(timedelta(hours=1))
    assert resolve_zone(None, 3) is UTC
    assert resolve_zone("Nowhere/Land", 3) is UTC


def test_request_date_formats() -> None:
    aware = datetime(2026, 5, 26, 12, 10, 4, tzinfo=PARIS)
    assert format_request_datetime(aware) == "2026-05-26 12:10:04"
    assert format_request_datetime(aware, UTC) == "2026-05-26 10:10:04"
    assert format_request_datetime(datetime(2026, 5, 26, 12, 10, 4), UTC) == "2026-05-26 12:10:04"
    assert format_request_datetime(date(2026, 5, 26)) == "2026-05-26"
    assert format_request_datetime("2026-05-26 12:10") == "2026-05-26 12:10"
    assert format_paket_time(datetime(2026, 5, 6, 7, 8, 9)) == "06.05.2026 07:08:09"


# --- OutgoingSms ------------------------------------------------------------------------------


def test_outgoing_items_reproduce_the_seed_datajson() -> None:
    seed = sample("seed_addalotofsms_datajson")
    messages = [
        OutgoingSms("015752982212", "Your password is 12345", 260, 1, urgent=True,
                    customerid=122, timetosend=datetime(2019, 7, 1, 23, 50)),
        OutgoingSms("015752982212", "Regular SMS. Not urgnet", 260, 1, urgent=False,
                    customerid=122, timetosend="2019-07-01 23:50:00"),
    ]  # fmt: skip
    items = [m.to_datajson_item() for m in messages]
    assert items == seed["smsdata"]
    assert [list(item) for item in items] == [list(item) for item in seed["smsdata"]]


def test_outgoing_item_omits_unset_optional_fields() -> None:
    seed_short = sample("seed_addalotofsms_datajson_short")["smsdata"][1]
    item = OutgoingSms("+4915752982212", "Test message 2", 260, 1, urgent=True,
                       timetosend="2019-07-01 23:50:00").to_datajson_item()  # fmt: skip
    assert item == seed_short
    plain = OutgoingSms("+49", "hi", 1, 0).to_datajson_item()
    assert plain == {"sendto": "+49", "body": "hi", "sim": 0, "device_id": 1, "urgent": 0}


SAMPLE_NAMES = [
    "apimd_addalotofsms_ok",  # decoded by the client tests (addalotofsms)
    "apimd_addsms_ok",
    "apimd_getallsms_ok",
    "apimd_getdevicestatus_ok",
    "apimd_getsmsstatus_ok",
    "apimd_gettoken_error",
    "apimd_gettoken_ok",
    "apimd_savecontact_ok",
    "apimd_savetag_ok",
    "quirks_getallsms",
    "quirks_getallsms_empty",
    "quirks_getallsms_onlycount",
    "seed_addalotofsms_datajson",
    "seed_addalotofsms_datajson_short",
    "seed_addsms_ok",
    "seed_getalldevices",
    "seed_getallsms",
    "seed_savecontact_ok",
    "seed_savepaket_ok",
    "seed_savetag_ok",
]
