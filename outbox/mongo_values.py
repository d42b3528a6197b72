"""BSON values as JSON holds them, for the event log (a document that has one JSON cannot
hold is parked) and for what a read returns."""

from __future__ import annotations

import base64
import math
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from bson import Binary, Decimal128, ObjectId
from bson.datetime_ms import DatetimeMS


class UnsupportedValue(Exception):
    """A BSON value with no faithful JSON form: the document is parked."""


def plain(value: Any) -> Any:
    """A document's value in the types JSON holds: ObjectIds and Decimal128 as text, binary as
    text when it is UTF-8 (else ``{"$base64": ...}``), datetimes left for the JSON encoder."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return plain_scalar(value)


def described(value: Any) -> Any:
    """:func:`plain`, with what it cannot convert written as its ``repr`` (total: for a
    parked row, and for the documents a read returns)."""
    if isinstance(value, dict):
        return {str(key): described(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [described(item) for item in value]
    try:
        return plain_scalar(value)
    except UnsupportedValue:
        return repr(value)


def plain_scalar(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int | datetime):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnsupportedValue(f"{value!r}, which JSON cannot hold")
        return value
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, Decimal128):
        number = value.to_decimal()
        if not number.is_finite():
            raise UnsupportedValue(f"{number}, which JSON cannot hold")
        return str(number)
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, Binary) and value.subtype in (3, 4) and len(value) == 16:
        return str(value.as_uuid(value.subtype))
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return {"$base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, DatetimeMS):
        raise UnsupportedValue(f"a date outside years 1-9999 ({int(value)} ms)")
    raise UnsupportedValue(f"a BSON {type(value).__name__} value, which readmodel does not convert")


def plain_timestamp(value: Any) -> Any:
    """A timestamp field's value as :func:`~outbox.timestamps.occurred_at` reads it: a
    Decimal128 as the number (an epoch) it is, not as its text (``"20231114"`` would pass for
    an ISO 8601 date)."""
    if isinstance(value, Decimal128):
        return value.to_decimal()
    return plain_scalar(value)
