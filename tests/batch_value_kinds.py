"""Values the batch-values property test writes into sized text, time, interval, enum,
text-UUID and array columns (each refused by the upsert, or stored and read alike in and
after its batch)."""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

_PARIS = ZoneInfo("Europe/Paris")

SHORT: list[Any] = ["abc", "abcd", "abc  ", "ab", "", 5, 12345, True, None]
CLOCKS: list[Any] = [
    "12:00",
    "12:00:00.5+02",
    "0:30 PM",
    "24:00",
    "now",
    "12:00 MSK",
    datetime.time(12, 0, 0, 5),
    datetime.time(12, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
    datetime.time(12, tzinfo=_PARIS),
    datetime.datetime(2024, 7, 2, 12, tzinfo=_PARIS),
    datetime.timedelta(hours=25),
    5,
    None,
]
SPANS: list[Any] = [
    "1 day",
    "1 month",
    "0.7 years",
    "-100 hours",
    "1:2.5",
    "P1DT2H",
    "1 day ago",
    "infinity",
    "11767033 years",
    datetime.timedelta(hours=1),
    datetime.timedelta.max,
    datetime.time(1, 30),
    5,
    None,
]
UUID_TEXT = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
LETTERS: list[Any] = ["a", "b", "c", " a", 5, None]
UUID_TEXTS: list[Any] = [UUID_TEXT.upper(), "{" + UUID_TEXT + "}", uuid.UUID(UUID_TEXT)]
UUID_TEXTS += ["abc", 5, None]
ARRAYS: list[Any] = [
    [Decimal("0.5625")],
    [0.5625, None],
    [[1, "2.5"], [3, 4]],
    [[1], [2, 3]],
    [True],
    (1, 2),
    [],
    "x",
    None,
]
