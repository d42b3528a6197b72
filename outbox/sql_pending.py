"""The oldest timestamp of an SQL outbox's pending rows, asked in the one query that counts
them.

A date or text column's ``MIN`` is its oldest. A numeric column holds Unix epochs, and with
``timestamp_unit = "auto"`` one outbox may mix units: a seconds epoch (1.7e9) is a smaller
number than any millisecond one (1.7e12) whatever their dates, so ``MIN`` is taken within
each range of :func:`~outbox.timestamps.epoch_ranges` (``MIN(CASE WHEN ... THEN ... END)``,
which every engine runs), where numeric order is date order, and the earliest of those dates
counts. The ranges hold only dates of the years 1 to 9999: a value that is none (NaN, an
infinity, a number past any date; the relay parks its row) is in no range and hides nothing.

A date column's values that are no date (PostgreSQL's ``'-infinity'``, which the driver
refuses to load and which would fail the whole query, or a BC date; MariaDB's zero dates;
SQLite text that is no date) are left out of its ``MIN`` the same way, by the engine's own
test (``SqlOutboxSource._a_date``) in the same query.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from config import TimestampUnit
from outbox.timestamps import BadTimestamp, EpochRange, as_utc, epoch_ranges


def oldest_columns(
    column: sa.ColumnElement[Any],
    epochs: bool,
    unit: TimestampUnit,
    dated: sa.ColumnElement[bool] | None = None,
) -> list[sa.ColumnElement[Any]]:
    """What to select for the oldest of ``column``: its ``MIN`` (of the values ``dated``
    holds for, when given), or for ``epochs`` (a numeric column) one ``MIN`` per range;
    :func:`oldest_of` reads them back."""
    if not epochs:
        return [sa.func.min(column if dated is None else sa.case((dated, column)))]
    return [sa.func.min(sa.case((_within(column, r), column))) for r in epoch_ranges(unit)]


def oldest_of(values: Sequence[Any], epochs: bool, unit: TimestampUnit) -> datetime | None:
    """The earliest date of what :func:`oldest_columns` selected (``None`` when none is)."""
    units: list[TimestampUnit] = [r.unit for r in epoch_ranges(unit)] if epochs else [unit]
    found: list[datetime] = []
    for value, read_as in zip(values, units, strict=True):
        if value is None:
            continue
        try:
            found.append(as_utc(value, read_as))
        except BadTimestamp:  # a row the relay will park: its age is not known
            continue
    return min(found, default=None)


def _within(column: sa.ColumnElement[Any], numbers: EpochRange) -> sa.ColumnElement[bool]:
    # Bounds inline: 10**20 fits no BIGINT parameter, and every engine reads a literal.
    low, high = sa.literal_column(str(numbers.low)), sa.literal_column(str(numbers.high))
    above = column > low if numbers.low_open else column >= low
    below = column < high if numbers.high_open else column <= high
    return sa.and_(above, below)
