"""When an outbox row happened: its timestamp column's value as an aware UTC datetime.

A ``datetime`` is read as it is (naive means UTC), a ``date`` (a SQL ``DATE`` column) as its
midnight UTC, text as ISO 8601. A number is a Unix epoch in the source's ``timestamp_unit``;
``"auto"`` (the default) tells the unit by the magnitude ``|value|``:

=====================  ===============  =============================================
``|value|``            read as          that unit is read right for dates
=====================  ===============  =============================================
up to 10**11           seconds          1970 to 5138
up to 10**14           milliseconds     1973-03-03 to 5138
up to 10**17           microseconds     1973-03-03 to 5138
above                  nanoseconds      1973-03-03 on (a signed BIGINT ends in 2262)
=====================  ===============  =============================================

(the same before 1970, for negative values). A millisecond, microsecond or nanosecond epoch
before 1973-03-03 is small enough to be read as a coarser unit: a source writing such dates
sets ``timestamp_unit``. Integers are converted exactly; a nanosecond epoch, a float or a
``Decimal`` is rounded to the nearest microsecond (half to even), which is all a
``datetime`` holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

from config import TimestampUnit

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
AUTO_LIMITS: tuple[tuple[int, TimestampUnit], ...] = ((10**11, "s"), (10**14, "ms"), (10**17, "us"))
"""``(largest |value|, unit)`` in order; a larger value is nanoseconds."""
_EXPONENT = {"s": 6, "ms": 3, "us": 0, "ns": -3}
"""Powers of ten from the unit to microseconds."""
BEYOND = 10**21
"""No epoch in any unit past this is a date a ``datetime`` holds (year 9999 is 2.6e20 ns)."""
_FIRST_SECOND = -62_135_596_800
"""0001-01-01T00:00:00Z as an epoch in seconds: the first a ``datetime`` holds."""
_PAST_LAST_SECOND = 253_402_300_800
"""10000-01-01T00:00:00Z as an epoch in seconds: the first second past any ``datetime``."""
_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


class BadTimestamp(ValueError):
    """A timestamp value that is no date in range; the message names the column."""


def epoch_unit(value: int | float | Decimal, unit: TimestampUnit = "auto") -> str:
    """The unit ``value`` is read in: ``unit``, or for ``"auto"`` the one its magnitude says."""
    if unit != "auto":
        return unit
    magnitude = abs(value)
    for limit, name in AUTO_LIMITS:
        if magnitude <= limit:
            return name
    return "ns"


@dataclass(frozen=True, slots=True)
class EpochRange:
    """Numbers read in one ``unit``, each a date of the years 1 to 9999, so that their
    numeric order is their date order: ``low <= value <= high`` (``<`` on an open side)."""

    unit: TimestampUnit
    low: int
    high: int
    low_open: bool
    high_open: bool


def epoch_ranges(unit: TimestampUnit = "auto") -> list[EpochRange]:
    """The ranges every epoch that is a date falls in, read in ``unit``: for ``"auto"`` one
    per magnitude of :data:`AUTO_LIMITS`, either side of 0 (seconds span 0), so the earliest
    date of a mix of units is the earliest of each range's smallest number; else one."""
    if unit != "auto":
        return [_dated(EpochRange(unit, -BEYOND, BEYOND, True, True))]
    ranges: list[EpochRange] = []
    floor = 0
    for limit, name in [*AUTO_LIMITS, (BEYOND, "ns")]:
        past = limit == BEYOND
        if not floor:
            ranges.append(_dated(EpochRange(name, -limit, limit, False, False)))
        else:
            ranges.append(_dated(EpochRange(name, floor, limit, True, past)))
            ranges.append(_dated(EpochRange(name, -limit, -floor, past, True)))
        floor = limit
    return ranges


def _dated(numbers: EpochRange) -> EpochRange:
    """``numbers`` narrowed to the epochs in its unit of the years 1 to 9999."""
    scale = _PER_SECOND[numbers.unit]
    first, past = _FIRST_SECOND * scale, _PAST_LAST_SECOND * scale
    low, low_open = (first, False) if first > numbers.low else (numbers.low, numbers.low_open)
    high, high_open = (past, True) if past <= numbers.high else (numbers.high, numbers.high_open)
    return EpochRange(numbers.unit, low, high, low_open, high_open)


def from_epoch(value: int | float | Decimal, unit: TimestampUnit = "auto") -> datetime:
    """``value`` as a Unix epoch in ``unit`` (see the module); :class:`OverflowError` when it
    is no date a ``datetime`` holds, :class:`ValueError` for NaN or an infinity."""
    if isinstance(value, float | Decimal) and not math.isfinite(value):
        raise ValueError(f"not a number: {value}")
    if abs(value) >= BEYOND:
        raise OverflowError(f"{value} is past any date")
    exponent = _EXPONENT[epoch_unit(value, unit)]
    if isinstance(value, int):
        if exponent >= 0:
            micros = value * 10**exponent
        else:
            micros, rest = divmod(value, 10**-exponent)
            half = 10**-exponent // 2
            if rest > half or (rest == half and micros % 2):
                micros += 1
    else:
        with localcontext() as context:
            context.prec = 80  # a float's exact binary value, scaled: nothing rounded but the end
            scaled = Decimal(value).scaleb(exponent)
            micros = int(scaled.to_integral_value(rounding=ROUND_HALF_EVEN))
    return EPOCH + timedelta(microseconds=micros)


def occurred_at(value: Any, column: str, unit: TimestampUnit = "auto") -> datetime | None:
    """The timestamp column ``column``'s ``value`` as an aware datetime (``None`` for NULL);
    :class:`BadTimestamp` naming the column when it is none."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return _in_utc_range(value, column)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        try:
            return from_epoch(value, unit)
        except (OverflowError, ValueError):
            raise BadTimestamp(f"timestamp (column {column!r}) is out of range: {value}") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            message = f"timestamp (column {column!r}) is not ISO 8601: {value!r}"
            raise BadTimestamp(message) from None
        return _in_utc_range(parsed, column)
    raise BadTimestamp(f"timestamp (column {column!r}) has unsupported type {type(value).__name__}")


def as_utc(value: Any, unit: TimestampUnit = "auto") -> datetime:
    """A timestamp a database gave back (``MIN(timestamp)``, ``CURRENT_TIMESTAMP``) as an
    aware datetime, read as :func:`occurred_at` reads a row's."""
    found = occurred_at(value, "timestamp", unit)
    if found is None:
        raise BadTimestamp("timestamp is NULL")
    return found


def _in_utc_range(value: datetime, column: str) -> datetime:
    """``value`` made aware (naive means UTC); it must exist in UTC (``0001-01-01+14:00`` not)."""
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    if 1 < aware.year < 9999:  # cheap: only the first and last year can overflow
        return aware
    try:
        aware.astimezone(UTC)
    except OverflowError:
        raise BadTimestamp(f"timestamp (column {column!r}) is out of range: {value}") from None
    return aware
