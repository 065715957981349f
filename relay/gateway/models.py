"""The gateway's answers as typed models, and the one message shape relay sends in bulk.

The gateway is loose about types (numbers as strings, ``null`` / ``0`` / ``"null"`` for
"nothing", collections as objects keyed by id or as lists), so every model here is liberal
in what it accepts: unknown fields are ignored, numeric strings are taken as numbers, and
each quirk seen in docs/gateway-api.md has a validator. The models are frozen.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from relay.gateway.dates import format_request_datetime, parse_gateway_datetime

__all__ = [
    "Device",
    "DeviceList",
    "DeviceStatus",
    "OutgoingSms",
    "SimInfo",
    "SmsList",
    "SmsRecord",
    "SmsStatus",
]


def _flag(value: Any) -> Any:
    """``null`` and ``""`` mean false; pydantic then takes true/false/0/1/"0"/"1"/"true"."""
    return False if value is None or value == "" else value


def _optional_flag(value: Any) -> Any:
    """Like :func:`_flag` but keeps "not said" (null, ``""``) as None."""
    return None if value == "" else value


def _zero_is_none(value: Any) -> Any:
    """Ids where the gateway writes ``0`` / ``"0"`` / ``""`` for "none given"."""
    if value is None or value in ("", "0") or (isinstance(value, int) and value == 0):
        return None
    return value


def _null_text(value: Any) -> Any:
    """Text where the gateway may write the string ``"null"``; surrounding spaces dropped."""
    if isinstance(value, str):
        value = value.strip()
        return None if value in ("", "null", "NULL") else value
    return value


def _text(value: Any) -> Any:
    """Text that is never missing: null becomes ``""``."""
    return "" if value is None else value


def _whole_seconds(value: Any) -> Any:
    """Seconds given as int, float or numeric string, rounded to an int."""
    if isinstance(value, str) and value.strip():
        value = float(value)
    if isinstance(value, float):
        return round(value)
    return value


GatewayDatetime = Annotated[datetime | None, BeforeValidator(parse_gateway_datetime)]
Flag = Annotated[bool, BeforeValidator(_flag)]
OptionalFlag = Annotated[bool | None, BeforeValidator(_optional_flag)]
OptionalId = Annotated[int | None, BeforeValidator(_zero_is_none)]
NullableText = Annotated[str | None, BeforeValidator(_null_text)]
Text = Annotated[str, BeforeValidator(_text)]


class GatewayModel(BaseModel):
    """Base of the answer models: frozen, extra fields ignored, numbers accepted as text."""

    model_config = ConfigDict(
        frozen=True, extra="ignore", coerce_numbers_to_str=True, populate_by_name=True
    )


def _keyed_items(value: Any, what: str) -> list[Any]:
    """A collection given as ``{"<id>": {...}}``, a list, ``[]``, ``""`` or null, as a list.

    Items of a keyed object keep the gateway's order and get their key as ``id`` when they
    lack one.
    """
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            if isinstance(item, Mapping) and "id" not in item:
                item = {**item, "id": key}
            items.append(item)
        return items
    raise ValueError(f"{what} must be an object keyed by id or a list")


class SmsRecord(GatewayModel):
    """One message as ``getallsms`` describes it."""

    id: int
    sendto: Text = ""
    body: Text = ""
    customerid: OptionalId = None
    status: int
    statustitle: Text = ""
    deviceid: int | None = Field(None, validation_alias=AliasChoices("deviceid", "device_id"))
    urgent: Flag = False
    created: GatewayDatetime = None
    senttime: GatewayDatetime = None
    timetosend: GatewayDatetime = None
    sim: int | None = None
    paketid: OptionalId = None
    pakettitle: str | None = None
    paketbody: str | None = None


class SmsList(GatewayModel):
    """A ``getallsms`` answer: the records in the gateway's order and its total ``count``.

    ``count`` may exceed ``len(records)`` when the gateway answers fewer records than match
    (see :attr:`more_available`); with ``onlycount`` there are no records at all.
    """

    records: list[SmsRecord] = Field(
        default_factory=list, validation_alias=AliasChoices("records", "smss")
    )
    count: int = 0

    @model_validator(mode="before")
    @classmethod
    def _default_count(cls, data: Any) -> Any:
        """A missing ``count`` is the number of records given."""
        if isinstance(data, Mapping) and data.get("count") in (None, ""):
            smss = data.get("smss", data.get("records"))
            data = {**data, "count": len(smss) if isinstance(smss, Mapping | list) else 0}
        return data

    @field_validator("records", mode="before")
    @classmethod
    def _records(cls, value: Any) -> list[Any]:
        return _keyed_items(value, "smss")

    @property
    def more_available(self) -> bool:
        """True when the gateway counted more records than it returned: narrow the query."""
        return self.count > len(self.records)


class SmsStatus(GatewayModel):
    """A ``getsmsstatus`` answer."""

    sms_id: int
    status: int
    status_description: Text = ""


class SimInfo(GatewayModel):
    """One SIM slot of a device; the gateway spells these keys capitalised (``IccId``...)."""

    slot: int = Field(validation_alias=AliasChoices("Slot", "slot"))
    iccid: NullableText = Field(None, validation_alias=AliasChoices("IccId", "iccid", "ICCID"))
    number: NullableText = Field(None, validation_alias=AliasChoices("Number", "number"))
    roaming: Flag = Field(False, validation_alias=AliasChoices("Roaming", "roaming"))
    country_iso: NullableText = Field(
        None, validation_alias=AliasChoices("CountryIso", "country_iso", "countryiso")
    )
    carrier_name: NullableText = Field(
        None, validation_alias=AliasChoices("CarrierName", "carrier_name", "carriername")
    )


class Device(GatewayModel):
    """One phone as ``getalldevices`` describes it; delays are in seconds (null: not set)."""

    id: int
    title: NullableText = None
    number: NullableText = None
    imei: NullableText = None
    created: GatewayDatetime = None
    lastseen: GatewayDatetime = None
    serialnumber: NullableText = None
    siminfo: list[SimInfo] = Field(default_factory=list)
    appversion: NullableText = None
    isappversionactual: OptionalFlag = None
    delaybetweeneachsms: float | None = None
    delaybetweenrequest: float | None = None
    subscription: OptionalFlag = None

    @field_validator("siminfo", mode="before")
    @classmethod
    def _siminfo(cls, value: Any) -> Any:
        """Null means no SIM; a JSON string or an object keyed by slot is unpacked."""
        if isinstance(value, str) and value.strip():
            value = json.loads(value)
        if isinstance(value, Mapping) and ("Slot" in value or "slot" in value):
            value = [value]
        if value is None or value == "":
            return []
        return list(value.values()) if isinstance(value, Mapping) else value

    @field_validator("delaybetweeneachsms", "delaybetweenrequest", mode="before")
    @classmethod
    def _delay(cls, value: Any) -> Any:
        return None if value == "" else value


class DeviceList(GatewayModel):
    """A ``getalldevices`` answer (which carries no ``error`` field)."""

    devices: list[Device] = Field(validation_alias=AliasChoices("devices", "device"))
    count: int | None = None

    @field_validator("devices", mode="before")
    @classmethod
    def _devices(cls, value: Any) -> list[Any]:
        return _keyed_items(value, "device")


class DeviceStatus(GatewayModel):
    """A ``getdevicestatus`` answer; ``diffseconds`` is the time since the phone last polled."""

    online: Flag = False
    device_id: int
    lastseen: GatewayDatetime = None
    diffseconds: Annotated[int | None, BeforeValidator(_whole_seconds)] = None
    title: NullableText = None


@dataclass(frozen=True, slots=True)
class OutgoingSms:
    """One message of an ``addalotofsms`` batch, in the gateway's own field names.

    Plain data: relay validates messages before they get here. ``timetosend`` as a datetime
    is sent as its own wall-clock time (the gateway takes it in the account's time zone).
    """

    sendto: str
    body: str
    device_id: int
    sim: int
    urgent: bool = False
    customerid: int | None = None
    timetosend: datetime | str | None = None

    @classmethod
    def of(cls, item: OutgoingSms | Mapping[str, Any]) -> OutgoingSms:
        """``item`` as a message: one already, or a mapping with the gateway's field names
        (``sendto``, ``body``, ``device_id``, optional ``sim``, ``urgent``, ``customerid``,
        ``timetosend``). Anything else is a :class:`TypeError` saying what is wrong."""
        if isinstance(item, OutgoingSms):
            return item
        if not isinstance(item, Mapping):
            raise TypeError(f"a message is an OutgoingSms or a mapping, not {type(item).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(item) - names)
        missing = [n for n in ("sendto", "body", "device_id") if n not in item]
        if unknown or missing:
            raise TypeError(
                f"a message mapping takes the gateway's field names ({', '.join(sorted(names))});"
                + (f" unknown: {', '.join(map(str, unknown))};" if unknown else "")
                + (f" missing: {', '.join(missing)}" if missing else "")
            )
        try:
            return cls(
                sendto=str(item["sendto"]),
                body=str(item["body"]),
                device_id=int(item["device_id"]),
                sim=int(item.get("sim") or 0),
                urgent=bool(int(item.get("urgent") or 0)),
                customerid=int(item["customerid"]) if item.get("customerid") is not None else None,
                timetosend=item.get("timetosend"),
            )
        except (TypeError, ValueError) as exc:
            raise TypeError(f"a message mapping has a value of the wrong type: {exc}") from None

    def to_datajson_item(self) -> dict[str, Any]:
        """The ``smsdata`` item: keys in the seed's order, ``urgent`` as 0/1, unset keys omitted."""
        item: dict[str, Any] = {"sendto": self.sendto, "body": self.body, "sim": self.sim}
        if self.timetosend is not None:
            item["timetosend"] = format_request_datetime(self.timetosend)
        item["device_id"] = self.device_id
        if self.customerid is not None:
            item["customerid"] = self.customerid
        item["urgent"] = 1 if self.urgent else 0
        return item
