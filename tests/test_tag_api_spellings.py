"""Every public way to spell a cache tag meets every other: a ``key_tags`` function or
format string, ``@query(tags=...)``, ``tx.invalidate(...)`` and a projection's own
``cache_tags`` each write a number as they hold it (``price:42.00``, ``amount:44.0``), and
the cache registers and invalidates each tag with its canonical spelling too. Each case
reads through Redis, applies an event through the engine and reads again."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from projections import Queries
from tests.cache_helpers import append, cached_runtime

# (what reads, what is applied: (aggregate type, aggregate id, event type, payload builder))
Read = Callable[[Queries], Any]
CASES: list[tuple[str, Read, tuple[str, str, str], Callable[[str], dict[str, Any]]]] = [
    (
        "key_tags function (price:42.00) / default cache_tags (price:42)",
        lambda q: q.get("tag_apis", "42.00", table="t_prices").value,
        ("price", "42", "PriceSet"),
        lambda value: {"value": value},
    ),
    (
        "@query tags (price:43.00) / default cache_tags (price:43)",
        lambda q: q.run("tag_apis", "price_of", Decimal("43.00")).value,
        ("price", "43", "PriceSet"),
        lambda value: {"value": value},
    ),
    (
        "key_tags format (amount:44) / tx.invalidate (amount:44.0)",
        lambda q: q.get("tag_apis", 44, table="t_amounts").value,
        ("batch", "1", "AmountSet"),
        lambda value: {"id": 44.0, "value": value},
    ),
    (
        "key_tags function (price:45) / own cache_tags (price:45.00)",
        lambda q: q.get("tag_apis", 45, table="t_prices").value,
        ("sku", "a", "Relabelled"),
        lambda value: {"price_id": "45.00", "value": value},
    ),
    (
        "@query tags (price:46) / own cache_tags (price:46.00)",
        lambda q: q.run("tag_apis", "price_by_number", 46).value,
        ("sku", "b", "Relabelled"),
        lambda value: {"price_id": "46.00", "value": value},
    ),
    (
        "result cache_tags (price:47.00) / default cache_tags (price:47)",
        lambda q: q.run("tag_apis", "price_row", 47).value,
        ("price", "47", "PriceSet"),
        lambda value: {"value": value},
    ),
]


@pytest.fixture
def tag_apis(store_url: str, make_settings: Callable[..., Any]) -> Iterator[tuple[Any, Queries]]:
    with cached_runtime(store_url, make_settings, "tests.tag_api_fixtures") as opened:
        yield opened


def _value(found: Any) -> Any:
    return found["value"] if isinstance(found, dict) else found


def test_tags_spelled_by_hand_meet_whichever_api_spelled_them(
    tag_apis: tuple[Any, Queries],
) -> None:
    runtime, queries = tag_apis

    def apply(event: tuple[str, str, str], payload: dict[str, Any]) -> None:
        append(runtime.log, "tags", [(*event, payload)])
        assert runtime.engine.catch_up(["tag_apis"]) == 1

    stale, missing = [], []
    for name, read, event, payload in CASES:
        apply(event, payload("v1"))
        first = [_value(read(queries)), _value(read(queries))]  # the second from the cache
        if first != ["v1", "v1"]:
            missing.append((name, first))
            continue
        apply(event, payload("v2"))
        if _value(read(queries)) != "v2":
            stale.append(name)
    assert missing == []
    assert stale == [], "\n".join(stale)
