"""A consistency wait that times out names the handler failure holding the awaited event's
lane, and only that lane's: a failing event of another lane of the source holds nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from outbox.envelope import aggregate_hash
from projections import ConsistencyTimeout
from projections.engine import RetryLater
from tests.shop_helpers import Shop, order_placed


def _in_partitions(partitions: int) -> list[str]:
    """An order id per partition of ``partitions``: ``ids[p]`` is in partition ``p``."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < partitions:
        found.setdefault(aggregate_hash("order", f"o{n}") % partitions, f"o{n}")
        n += 1
    return [found[p] for p in range(partitions)]


def test_a_failing_event_of_another_lane_is_not_named_as_holding_the_wait(
    shop_factory: Callable[..., Shop], pg_database: Callable[[], str]
) -> None:
    shop = shop_factory(pg_database())
    engine = shop.runtime.engine
    projection = engine.projection("shop_orders")
    failing, awaited = _in_partitions(projection.partitions)[:2]
    [_, placed] = shop.write([order_placed(failing, "c1", -1), order_placed(awaited, "c1", 5)])
    shop.relay()
    [failing_lane] = [lane for lane in engine.lanes(projection) if lane.partition == 0]
    with pytest.raises(RetryLater):
        engine.process(failing_lane, 2)  # shop:1 fails (negative amount); no other lane runs

    with pytest.raises(ConsistencyTimeout) as behind:
        shop.queries.get("shop_orders", awaited, wait_for=placed, timeout=0.1)
    message = str(behind.value)
    assert "it is shop:2 (OrderPlaced of order:" in message and "in lane shop/1" in message
    assert "failed" not in message and "(are workers running?)" in message

    # the failing event's own lane does name it
    [_, held] = shop.write([order_placed(failing, "c1", 3), order_placed(awaited, "c1", 6)])
    shop.relay()
    with pytest.raises(ConsistencyTimeout, match=r"the handler of shop:1 failed 1 time"):
        shop.queries.wait("shop_orders", "shop:3", timeout=0.1)
