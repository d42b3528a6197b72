"""One spelling of a key in cache tags, for every side that writes a key's tag.

A cached get is tagged from the key it reads by, typed as its column (``key_tags``:
``"product:{product_id}"`` over ``Decimal('42.00')``, ``datetime(2024, 5, 1, 10)``); an
applied event invalidates the tag of its aggregate id, text as the service wrote it
(``"product:42"``, ``"2024-05-01T10:00:00Z"``). Formatted as they are, the two miss each
other for NUMERIC, float, timestamp and time keys, and for a UUID the service spells in
capitals, and the entry stays stale until its TTL.

Tags are also spelled by hand (a ``key_tags`` function, ``@query(tags=...)``,
``cache_tags`` of a result, ``tx.invalidate(...)``, a projection's own ``cache_tags``), so
the cache itself adds, to every tag it registers or invalidates, the *canonical* spelling
of the id at its end (:func:`tag_spellings`): a number as its shortest decimal text
(``42``, ``1.5``; past 15 significant digits, the nearest double's too), a timestamp in ISO
8601 in UTC both with ``+00:00`` and without an offset (a naive timestamp is taken as UTC: a
naive column holds ``...Z`` ids so; an aware one is also spelled as its wall time without
the offset, which is what SQLite's naive column holds of it), a time in ISO 8601 with
seconds, a UUID in lower case with hyphens. Each tag keeps its own spelling too, so
nothing invalidated before is missed now; a tag too many only costs a reload."""

from __future__ import annotations

import math
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


def tag_spellings(tag: str) -> list[str]:
    """``tag``, then the same tag with the other canonical spellings of the id it ends
    with: the text after its first ``:`` that reads as a number, timestamp, time or UUID
    (``"pos:acme:price:42.00"``: ``"pos:acme:price:42"``)."""
    start = tag.find(":") + 1
    while start:
        rest = tag[start:]
        spelled = _value_spellings(rest)
        if spelled is not None:
            head = tag[:start]
            return [tag, *(head + text for text in dict.fromkeys(spelled) if text != rest)]
        start = tag.find(":", start) + 1
    return [tag]


def tag_moment(tag: str) -> tuple[str, datetime] | None:
    """``(head, timestamp)`` when the id ``tag`` ends with (as :func:`tag_spellings` finds
    it) is a timestamp: ``"moment:2024-05-01T10:00:00Z"`` is ``("moment:", 10:00 UTC)``."""
    start = tag.find(":") + 1
    while start:
        rest = tag[start:]
        if _value_spellings(rest) is not None:
            if not rest[0].isdigit() or ("-" not in rest and ":" not in rest):
                return None
            try:
                Decimal(rest)
            except InvalidOperation:
                try:
                    return tag[:start], datetime.fromisoformat(rest)
                except ValueError:  # a time
                    return None
            return None
        start = tag.find(":", start) + 1
    return None


def tag_number(tag: str) -> tuple[str, Decimal] | None:
    """``(head, number)`` when the id ``tag`` ends with (as :func:`tag_spellings` finds it)
    is a finite number: ``"price:0.125"`` is ``("price:", Decimal("0.125"))``."""
    start = tag.find(":") + 1
    while start:
        rest = tag[start:]
        if _value_spellings(rest) is not None:
            try:
                number = Decimal(rest)
            except InvalidOperation:  # a timestamp, a time or a UUID
                return None
            return (tag[:start], number) if number.is_finite() else None
        start = tag.find(":", start) + 1
    return None


def _value_spellings(text: str) -> list[str] | None:
    """The canonical spellings of the number, timestamp, time or UUID ``text`` is, or
    ``None`` when it is none of them."""
    if not text or len(text) > 64:
        return None
    first = text[0]
    if first.isdigit() and (first != "0" or len(text) == 1) and text.isdigit():
        return [text]
    if first.isdigit() or first in "+-.":
        try:
            number = Decimal(text)
        except InvalidOperation:
            number = None
        if number is not None and number.is_finite():
            return _number_spellings(number)
        if first.isdigit() and ("-" in text or ":" in text):
            moments = _moments(text)
            if moments:
                return moments
    if len(text) in (32, 36, 38) and not text.isdigit():
        try:
            return [str(uuid.UUID(text))]
        except ValueError:
            pass
    return None


def _number_spellings(number: Decimal) -> list[str]:
    """A number's shortest decimal text and, past 15 significant digits, the nearest
    double's too: SQLite keeps a float, and a NUMERIC fraction, as a double (the id
    ``0.1000000000000000055511151231257827`` is the row a get of ``0.1`` finds there; a
    float key 2**53 is the row of the event of ``9007199254740993``)."""
    spelled = [_number(number)]
    if len(number.as_tuple().digits) > 15:
        double = float(number)
        if math.isfinite(double):
            spelled.append(_number(Decimal(repr(double))))
    return spelled


def _number(value: Decimal) -> str:
    if not value.is_finite() or abs(value.adjusted()) > 64:  # no page of digits: 1E+999999
        return str(value.normalize())
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _moment(value: datetime) -> str:
    return (value if value.tzinfo is None else value.astimezone(UTC)).isoformat()


def _moments(text: str) -> list[str]:
    """A timestamp's UTC spellings, with and without ``+00:00`` (a naive one taken as UTC),
    and an aware one's wall time without its offset too (what SQLite's naive column stores
    of it, and compares a key by: ``12:00+02:00`` is the row ``12:00`` there); a time's ISO
    spelling with seconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            return [time.fromisoformat(text).isoformat()]
        except ValueError:
            return []
    if moment.tzinfo is None:
        return [moment.isoformat(), moment.replace(tzinfo=UTC).isoformat()]
    wall = moment.replace(tzinfo=None)
    moment = moment.astimezone(UTC).replace(tzinfo=None)
    return [moment.isoformat(), moment.replace(tzinfo=UTC).isoformat(), wall.isoformat()]
