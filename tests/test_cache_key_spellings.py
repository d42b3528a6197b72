"""A cached get of one row by different spellings of its key: each spelling the database
finds the row by must read the new value once an event of the row is applied (the tags of
its entry and of the event meet), spellings of one key share one entry, and a hit does not
work out the entry's tags (only a miss stores them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from projections import Queries
from tests import spelled_key_fixtures as fixtures
from tests.cache_helpers import append, cached_runtime


@pytest.fixture
def spelled(store_url: str, make_settings: Callable[..., Any]) -> Iterator[tuple[Any, Queries]]:
    with cached_runtime(store_url, make_settings, "tests.spelled_key_fixtures") as opened:
        yield opened


def _apply(runtime: Any, kind: str, aggregate_id: str, value: str) -> None:
    append(runtime.log, "keys", [(kind, aggregate_id, "ValueSet", {"value": value})])
    assert runtime.engine.catch_up(["spelled_keys"]) == 1


def _read(queries: Queries, table: str, key: Any) -> Any:
    row = queries.get("spelled_keys", key, table=table).value
    return None if row is None else row["value"]


def test_a_hit_does_not_work_out_the_tags_of_its_entry(spelled: tuple[Any, Queries]) -> None:
    runtime, queries = spelled
    _apply(runtime, "counted", "c-1", "v1")
    fixtures.TAG_CALLS.clear()
    assert [_read(queries, "n_counted", "c-1") for _ in range(3)] == ["v1"] * 3
    assert fixtures.TAG_CALLS == [{"id": "c-1"}]  # the miss's, none of the two hits'
    _apply(runtime, "counted", "c-1", "v2")
    assert _read(queries, "n_counted", "c-1") == "v2"
    assert len(fixtures.TAG_CALLS) == 2


def test_a_query_hit_does_not_work_out_its_argument_tags(spelled: tuple[Any, Queries]) -> None:
    runtime, queries = spelled
    _apply(runtime, "counted", "c-2", "v1")
    fixtures.TAG_CALLS.clear()
    values = [queries.run("spelled_keys", "counted", "c-2").value["value"] for _ in range(3)]
    assert values == ["v1"] * 3
    assert fixtures.TAG_CALLS == [{"id": "c-2"}]  # the miss's, none of the two hits'
    _apply(runtime, "counted", "c-2", "v2")
    assert queries.run("spelled_keys", "counted", "c-2").value["value"] == "v2"
