"""The relay's publisher messages a lane only when the appended batch holds an event its
projection subscribes to in the lane's partition: a projection is not woken for the types it
does not read. Counted in a real Redis broker queue (a namespace of the test's own) that no
worker consumes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest

from config import load_settings
from outbox.envelope import aggregate_hash
from outbox.log import AppendResult
from outbox.rows import LogRecord
from tests.broker_helpers import queued_lanes
from workers.actors import Actors, Publisher
from workers.broker import make_broker
from workers.runtime import Runtime, build_runtime

TOTALS = "tests.projection_fixtures:Totals"  # bank: Deposited; 4 partitions
BALANCES = "tests.projection_fixtures:Balances"  # bank: Deposited, Withdrawn; 2 partitions
SALES = "tests.tenant_fixtures:SalesByDay"  # the group pos: SaleRecorded; 2 partitions

Event = tuple[str, str, str]  # aggregate type, aggregate id, event type


def _in_partition(aggregate_type: str, partition: int, partitions: int) -> str:
    return next(
        f"{aggregate_type[0]}{i}"
        for i in range(1000)
        if aggregate_hash(aggregate_type, f"{aggregate_type[0]}{i}") % partitions == partition
    )


class _Pipeline:
    """A runtime on a real event log, its publisher on a real Redis broker."""

    def __init__(self, runtime: Runtime, broker: dramatiq.Broker, settings: dict[str, Any]):
        self.runtime = runtime
        self.broker = broker
        self.publisher = Publisher(Actors(broker, runtime))
        self.url, self.queue = settings["url"], settings["queue"]

    def append(self, source: str, events: list[Event]) -> AppendResult:
        """Append ``events`` as one batch, and publish it as the relay does."""
        records = [
            LogRecord(
                source_position=None,
                event_id=uuid.uuid4().hex,
                tenant="acme" if source.startswith("pos:") else None,
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                key_hash=aggregate_hash(aggregate_type, aggregate_id),
                event_type=event_type,
                payload="{}",
                headers=None,
                occurred_at=None,
            )
            for aggregate_type, aggregate_id, event_type in events
        ]
        result = self.runtime.log.append(source, records)
        self.publisher.after_append(source, result)
        return result

    def queued(self) -> list[tuple[str, str, int, int]]:
        return queued_lanes(self.url, self.queue)


@pytest.fixture
def pipeline(store_url: str, broker_for: Callable[[str], dict[str, Any]]) -> Iterator[_Pipeline]:
    broker_settings = broker_for("redis")
    settings = load_settings(
        None,
        store={"url": store_url},
        broker=broker_settings,
        projections=[TOTALS, BALANCES, SALES],
        external_sources=["bank", "pos:acme"],
    )
    runtime = build_runtime(settings)
    broker = make_broker(settings.broker)
    try:
        yield _Pipeline(runtime, broker, broker_settings)
    finally:
        broker.close()
        runtime.close()


def test_a_batch_of_unread_types_wakes_only_the_projections_reading_them(
    pipeline: _Pipeline,
) -> None:
    # Totals' partitions 0 and 2, both Balances' partition 0.
    withdrawals = [("account", _in_partition("account", p, 4), "Withdrawn") for p in (0, 2)]
    result = pipeline.append("bank", withdrawals)

    assert result.appended == 2
    assert pipeline.queued() == [("balances", "bank", 0, result.head)]


def test_a_mixed_batch_wakes_exactly_the_lanes_with_subscribed_events_in_them(
    pipeline: _Pipeline,
) -> None:
    deposit = ("account", _in_partition("account", 1, 4), "Deposited")
    withdrawals = [("account", _in_partition("account", p, 4), "Withdrawn") for p in (0, 2, 3)]
    result = pipeline.append("bank", [withdrawals[0], deposit, *withdrawals[1:]])

    head = result.head
    assert result.appended == 4
    assert pipeline.queued() == [
        ("balances", "bank", 0, head),  # Withdrawn in Totals' 0 and 2
        ("balances", "bank", 1, head),  # Deposited in 1, Withdrawn in 3
        ("totals", "bank", 1, head),  # its one Deposited; none for 0, 2, 3
    ]


def test_a_member_source_of_a_group_wakes_by_the_types_of_the_group(
    pipeline: _Pipeline,
) -> None:
    register = _in_partition("register", 1, 2)
    pipeline.append("pos:acme", [("product", "p1", "ProductSynced"), ("register", "r0", "Opened")])
    assert pipeline.queued() == []

    sold = pipeline.append(
        "pos:acme",
        [("product", "p1", "ProductSynced")] * 2 + [("register", register, "SaleRecorded")],
    )
    assert pipeline.queued() == [("sales_by_day", "pos:acme", 1, sold.head)]
