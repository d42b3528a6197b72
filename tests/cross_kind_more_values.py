"""Columns and values tests/test_cross_kind_values_more.py writes and looks up: column types
tests/test_cross_kind_values.py does not cover (``SMALLINT``, unsized and float ``NUMERIC``,
``CHAR(n)``, ``TIME WITH TIME ZONE``, enums, binary, arrays, text UUIDs), and values of
every kind, their own included (bytes-likes, an ``Enum`` member, empty and nested lists)."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

__all__ = ["COLUMNS", "KEYS", "VALUES", "Colour", "own"]


class Colour(enum.Enum):
    """An enum of neither int nor str: psycopg sends a member's name, sqlite3 binds none."""

    RED = "red"
    BLUE = "blue"


def _array(item: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.ARRAY(item), "postgresql")


_TZ = timezone(timedelta(hours=2))
COLUMNS: dict[str, sa.types.TypeEngine[Any]] = {
    "text": sa.Text(),
    "count": sa.Integer(),
    "ratio": sa.Float(),
    "flag": sa.Boolean(),
    "at": sa.DateTime(timezone=True),
    "day": sa.Date(),
    "clock": sa.Time(),
    "uid": sa.Uuid(),
    "small": sa.SmallInteger(),
    "num": sa.Numeric(),
    "fnum": sa.Numeric(asdecimal=False),
    "dfloat": sa.Float(asdecimal=True),
    "real": sa.REAL(),
    "ch": sa.CHAR(3),
    "short": sa.String(3),
    "tzclock": sa.Time(timezone=True),
    "nenum": sa.Enum(Colour, name="colour"),
    "tenum": sa.Enum("red", "blue", name="tcolour", native_enum=False),
    "blob": sa.LargeBinary(),
    "ints": _array(sa.Integer()),
    "texts": _array(sa.Text()),
    "ats": _array(sa.DateTime(timezone=True)),
    "centss": _array(sa.Numeric(10, 2)),
    "suid": sa.Uuid(as_uuid=False),
    "jb": sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
    "span": sa.Interval(),
}
_OWN: dict[str, Any] = {
    "text": "abc",
    "count": 7,
    "ratio": 2.5,
    "flag": True,
    "at": datetime(2024, 5, 1, 10, tzinfo=UTC),
    "day": date(2024, 5, 1),
    "clock": time(10, 30),
    "uid": uuid.UUID(int=5),
    "small": 7,
    "num": Decimal("2.5"),
    "fnum": 2.5,
    "dfloat": Decimal("2.5"),
    "real": 2.5,
    "ch": "ab",
    "short": "ab",
    "tzclock": time(10, 30, tzinfo=_TZ),
    "nenum": Colour.RED,
    "tenum": "red",
    "blob": b"raw",
    "ints": [1, 2],
    "texts": ["a", "b"],
    "ats": [datetime(2024, 5, 1, 10, tzinfo=UTC)],
    "centss": [Decimal("2.50")],
    "suid": str(uuid.UUID(int=5)),
    "jb": {"k": [1, 2]},
    "span": timedelta(hours=1),
}
KEYS = [name for name in COLUMNS if name not in ("ints", "texts", "ats", "centss", "jb")]
"""The columns a table is keyed by, looked up with every value."""


def own(kind: str, column: str) -> Any:
    """A value of ``column``'s own kind on database ``kind`` (SQLite's JSON holds floats)."""
    if kind == "sqlite" and column == "centss":
        return [2.5]
    return _OWN[column]


VALUES: list[Any] = [
    *_OWN.values(),
    "",
    "  ",
    ".",
    "42",
    "2.5",
    "2024-05-01",
    "10:30",
    "1 day",
    str(uuid.UUID(int=5)),
    "true",
    0,
    -1,
    2**40,
    1e300,
    float("nan"),
    float("inf"),
    Decimal("NaN"),
    Decimal("0.5625"),
    False,
    bytearray(b"raw"),
    memoryview(b"raw"),
    datetime(2024, 5, 1, 10),
    time(10, 30, 15),
    [5],
    (7,),
    [],
    [None],
    [[1, 2], [3, 4]],
    ["a", 1],
    {"k": 5},
    None,
]
