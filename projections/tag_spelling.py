"""One spelling of a key in cache tags, for the two sides that write a key's tag.

A cached get is tagged from the key it reads by, typed as its column (``key_tags``:
``"product:{product_id}"`` over ``Decimal('42.00')``, ``datetime(2024, 5, 1, 10)``); an
applied event invalidates the tag of its aggregate id, text as the service wrote it
(``"product:42"``, ``"2024-05-01T10:00:00Z"``). Formatted as they are, the two miss each
other for NUMERIC, float, timestamp and time keys, and for a UUID the service spells in
capitals, and the entry stays stale until its TTL.

Both sides therefore add the *canonical* spelling of what they hold: a number as its
shortest decimal text (``42``, ``1.5``), a timestamp in ISO 8601 (UTC when it has an
offset), a time in ISO 8601 with seconds, a UUID in lower case with hyphens. Each side
keeps its own spelling too, so nothing invalidated before is missed now; a tag too many
only costs a reload."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any


def key_text(value: Any) -> Any:
    """A key value as its tags spell it: the canonical text of a number that is not an
    ``int``, a timestamp, a time or a UUID; any other value as it is."""
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, Decimal):
        return _number(value)
    if isinstance(value, float):
        return _number(Decimal(repr(value)))
    if isinstance(value, datetime):
        return _moment(value)
    if isinstance(value, time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def id_spellings(text: str) -> list[str]:
    """An aggregate id, then the canonical spellings of the key values it may stand for
    (``"45.00"``: ``"45"``; ``"...Z"``: ``"...+00:00"``; ``"11:00"``: ``"11:00:00"``)."""
    spelled = [text]
    if not text or len(text) > 64:
        return spelled
    first = text[0]
    if first.isdigit() or first in "+-.":
        try:
            number = Decimal(text)
        except InvalidOperation:
            number = None
        if number is not None and number.is_finite():
            spelled.append(_number(number))
        elif first.isdigit() and ("-" in text or ":" in text):
            spelled += _moments(text)
    if len(text) in (32, 36, 38) and not text.isdigit():
        try:
            spelled.append(str(uuid.UUID(text)))
        except ValueError:
            pass
    return list(dict.fromkeys(spelled))


def _number(value: Decimal) -> str:
    if not value.is_finite():
        return str(value)
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _moment(value: datetime) -> str:
    return (value if value.tzinfo is None else value.astimezone(UTC)).isoformat()


def _moments(text: str) -> list[str]:
    for parse, spell in ((datetime.fromisoformat, _moment), (time.fromisoformat, time.isoformat)):
        try:
            return [spell(parse(text))]  # type: ignore[operator]
        except ValueError:
            continue
    return []
