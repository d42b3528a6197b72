"""A JSON column's value as the store keeps it: as the dialect's serializer writes it and
its deserializer reads it; for ``JSONB``, keys ordered as PostgreSQL orders them (shorter
first), numbers read back as ``numeric`` prints them, and no NUL character.

Separate from :mod:`projections.sql_other_values` (which picks a column's converter): one
value kind, with its own refusals.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Dialect

from outbox.json_numbers import UnwritableIntegerError
from projections.sql_limits import Unstorable

Converter = Callable[[Any], Any]

_NUL_JSONB = (
    "PostgreSQL jsonb holds no NUL character ('\\u0000') in a string or a key: remove it, or "
    "use a JSON column"
)


def _json(dialect: Dialect, binary: bool) -> Converter:
    """The value as the dialect's JSON serializer writes it and its deserializer reads it;
    for ``JSONB``, as PostgreSQL keeps it (keys ordered, numbers as ``numeric``)."""
    dumps = getattr(dialect, "_json_serializer", None) or json.dumps
    loads = getattr(dialect, "_json_deserializer", None) or json.loads

    def jsonb(value: Any) -> Any:
        kind = type(value)
        if kind is str:
            if "\x00" in value:
                raise Unstorable(_NUL_JSONB)
            return value
        if kind is dict:
            if any("\x00" in key for key in value):
                raise Unstorable(_NUL_JSONB)
            return {key: jsonb(value[key]) for key in sorted(value, key=_jsonb_order)}
        if kind is list:
            return [jsonb(item) for item in value]
        if kind is float:
            text = dumps(value)
            number = Decimal(text if isinstance(text, str) else text.decode())
            if not number.is_finite():
                return value
            return loads(format(number if number else abs(number), "f"))
        return value

    def convert(value: Any) -> Any:
        try:
            text = dumps(value)
        except UnwritableIntegerError:
            raise  # refused naming the column
        except (TypeError, ValueError) as exc:  # the flush would fail alike
            # Its type only: the serializer's message may quote the value (never shown).
            why = f"the JSON serializer cannot write it ({type(exc).__name__})"
            raise Unstorable(why) from None
        try:
            document = loads(text)
            return jsonb(document) if binary else document
        except Unstorable:
            raise
        except Exception:
            return value  # a later read would refuse it

    return convert


def _jsonb_order(key: str) -> tuple[int, bytes]:
    encoded = key.encode()
    return len(encoded), encoded
