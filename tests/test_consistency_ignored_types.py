"""A consistency wait for an event of a type the projection ignores: the relay does not wake
a lane for such a type, so the lane's checkpoint may stay behind it until the next sweep.
The wait is over once the lane has applied every event before it that the projection reads
(at once when there is none), not when a sweep happens to move the checkpoint past it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from projections import ConsistencyTimeout
from tests.shop_helpers import Shop, order_placed, pipeline_running


@pytest.fixture
def running(
    shop_factory: Callable[..., Shop],
    pg_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
) -> Iterator[Shop]:
    """Relay and worker in this process on a Redis broker; no sweep after the first."""
    shop = shop_factory(pg_database(), broker=broker_for("redis"), engine={"sweep_every": "1h"})
    with pipeline_running(shop):
        yield shop


def test_an_ignored_event_is_reached_once_what_the_lane_reads_before_it_is(running: Shop) -> None:
    q = running.queries
    [placed] = running.write([order_placed("o1", "c1", 10)])
    q.wait("shop_orders", placed, timeout=30)

    [audited] = running.write([("order", "o1", "OrderAudited", {})])
    reached = q.wait("shop_orders", audited, timeout=5)  # timed out before: no sweep due
    assert reached.checkpoint is not None and reached.lane is not None

    # The order placed before the audit, in one transaction: the wait covers it.
    [_, audited] = running.write([order_placed("o2", "c1", 7), ("order", "o2", "OrderAudited", {})])
    result = q.get("shop_orders", "o2", wait_for=audited, timeout=30)
    assert not result.stale and result.value["amount"] == 7


def test_an_ignored_event_waits_for_an_unapplied_read_event_before_it(
    shop_factory: Callable[..., Shop], pg_database: Callable[[], str]
) -> None:
    shop = shop_factory(pg_database())
    [placed, audited] = shop.write(
        [order_placed("o1", "c1", 10), ("order", "o1", "OrderAudited", {})]
    )
    [alone] = shop.write([("order", "o9", "OrderAudited", {})])  # another lane than o1
    shop.relay()
    with pytest.raises(ConsistencyTimeout, match="OrderAudited of order:o1"):
        shop.queries.wait("shop_orders", audited, timeout=0.1)
    nothing_before = shop.queries.wait("shop_orders", alone, timeout=0.1)
    assert nothing_before.checkpoint == 0

    shop.runtime.engine.catch_up()
    assert shop.queries.wait("shop_orders", audited, timeout=5).checkpoint >= 2
    assert shop.queries.wait("shop_orders", placed, timeout=5).checkpoint >= 1
