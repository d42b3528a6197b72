"""A cached get by key is tagged from the key it is given; an applied event invalidates the
tag of its aggregate id. Both must spell one key alike, whatever the key column's type and
however the service or the caller writes it, or the entry stays stale until its TTL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest

from projections import Queries
from tests.cache_helpers import append, cached_runtime

_UUID = "3f1c0d2e-5b6a-4c7d-8e9f-0a1b2c3d4e5f"
_OTHER_UUID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"

# (key column kind, the aggregate id as the service writes it, the key a caller reads by)
CASES: list[tuple[str, str, Any]] = [
    ("integer", "42", "42"),
    ("integer", "43", 43),
    ("integer", "44", 44.0),
    ("numeric", "42", "42"),
    ("numeric", "43", Decimal("43.00")),
    ("numeric", "44", 44),
    ("numeric", "45.00", "45"),
    ("numeric", "1.5", "1.50"),
    ("numeric", "2.50", Decimal("2.5")),
    ("float", "1.5", "1.5"),
    ("float", "42", "42"),
    ("float", "43", 43.0),
    ("uuid", _UUID, _UUID),
    ("uuid", _OTHER_UUID.upper(), uuid.UUID(_OTHER_UUID)),
    ("timestamp", "2024-05-01T10:00:00", "2024-05-01T10:00:00"),
    ("timestamp", "2024-05-02T10:00:00", datetime(2024, 5, 2, 10)),
    ("timestamp", "2024-05-03T10:00:00.500000", "2024-05-03T10:00:00.5"),
    ("timestamp", "2024-05-04T10:00:00Z", "2024-05-04T10:00:00"),
    ("timestamp", "2024-05-06T10:00:00", "2024-05-06T10:00:00Z"),
    ("timestamptz", "2024-05-01T10:00:00+00:00", "2024-05-01T10:00:00+00:00"),
    ("timestamptz", "2024-05-03T10:00:00", "2024-05-03T10:00:00+00:00"),
    ("timestamptz", "2024-05-02T10:00:00Z", "2024-05-02T10:00:00+00:00"),
    ("date", "2024-05-01", "2024-05-01"),
    ("date", "2024-05-02", date(2024, 5, 2)),
    ("time", "10:00:00", "10:00:00"),
    ("time", "11:00", "11:00"),
    ("text", "abc", "abc"),
    ("text", "007", "007"),
]


@pytest.fixture
def typed_keys(store_url: str, make_settings: Callable[..., Any]) -> Iterator[tuple[Any, Queries]]:
    with cached_runtime(store_url, make_settings, "tests.key_tag_fixtures") as opened:
        yield opened


def test_an_applied_event_invalidates_the_cached_get_of_its_row(
    typed_keys: tuple[Any, Queries],
) -> None:
    runtime, queries = typed_keys

    def apply(kind: str, aggregate_id: str, value: str) -> None:
        append(runtime.log, "keys", [(kind, aggregate_id, "ValueSet", {"value": value})])
        assert runtime.engine.catch_up(["typed_keys"]) == 1

    def read(kind: str, key: Any) -> Any:
        row = queries.get("typed_keys", key, table=f"k_{kind}").value
        return None if row is None else row["value"]

    stale, missing = [], []
    for kind, aggregate_id, key in CASES:
        apply(kind, aggregate_id, "v1")
        first = [read(kind, key), read(kind, key)]  # the second from the cache
        if first != ["v1", "v1"]:
            missing.append((kind, aggregate_id, key, first))
            continue
        apply(kind, aggregate_id, "v2")
        if read(kind, key) != "v2":
            stale.append((kind, aggregate_id, key))
    assert missing == []
    assert stale == [], "\n".join(map(repr, stale))
