"""How a query's cache key is written: JSON text of the key or arguments (exact numbers; an
ObjectId, a date or a time marked as such), under its tenant's start."""

from __future__ import annotations

from datetime import date, time
from decimal import Decimal
from typing import Any

import orjson
from bson import ObjectId

from outbox.json_numbers import dumps_exact
from projections.query_errors import QueryError
from projections.tag_spelling import key_text


def tenant_key(tenant: str | None) -> str:
    """The start of a cache key: one tenant's entries are never another's."""
    return "" if tenant is None else "tenant:" + key_json(tenant) + ":"


def whole_numbers_as_int(value: Any) -> Any:
    """``value`` with each float or :class:`~decimal.Decimal` that is a whole number of 64
    bits (``42.0``) as that ``int``, in lists and objects too."""
    if isinstance(value, float | Decimal):
        try:
            whole = int(value)
        except (OverflowError, ValueError):  # infinite, NaN
            return value
        return whole if whole == value and -(2**63) <= whole < 2**63 else value
    if isinstance(value, list | tuple):
        return type(value)(whole_numbers_as_int(item) for item in value)
    if isinstance(value, dict):
        return {name: whole_numbers_as_int(item) for name, item in value.items()}
    return value


def numbers_canonical(values: list[Any]) -> list[Any]:
    """A SQL key's values with each float or :class:`~decimal.Decimal` spelled one way per
    number: a whole number as the ``int``, any other as ``{"$number": TEXT}``, its shortest
    decimal text (as its tag spells it). ``45``, ``45.0``, ``Decimal('45.00')`` and ``'45'``
    read into a NUMERIC column find one row: they are one cache entry too."""
    return [_number_part(value) for value in values]


def _number_part(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, float | Decimal):
        return value
    text = key_text(value)
    if text.isdigit() or text[:1] == "-" and text[1:].isdigit():
        return int(text)
    return {"$number": text}


def decimals_marked(value: Any) -> Any:
    """``value`` with each :class:`~decimal.Decimal` as ``{"$numberDecimal": TEXT}`` (its
    normal form: ``1.50`` is ``1.5``), in lists and objects too: a document key's cache key
    then never meets the text ``_id`` of its digits, another document."""
    if isinstance(value, Decimal):
        return {"$numberDecimal": str(value.normalize())}
    if isinstance(value, list | tuple):
        return [decimals_marked(item) for item in value]
    if isinstance(value, dict):
        return {name: decimals_marked(item) for name, item in value.items()}
    return value


def key_json(value: Any) -> str:
    """``value`` as the JSON text of a cache key: an ObjectId as ``{"$oid": HEX}`` and a
    date or time as ``{"$date": ISO}``, not as text (a text ``_id`` of those characters is
    another document)."""
    try:
        return dumps_exact(
            value, default=_cache_key_part, option=orjson.OPT_PASSTHROUGH_DATETIME
        ).decode()
    except orjson.JSONEncodeError as exc:  # a lone surrogate: text that is not valid UTF-8
        raise QueryError(f"{value!r} cannot be read: {exc}") from None


def _cache_key_part(value: Any) -> Any:
    if isinstance(value, ObjectId):
        return {"$oid": str(value)}
    if isinstance(value, date | time):  # datetime too
        return {"$date": value.isoformat()}
    return str(value)
