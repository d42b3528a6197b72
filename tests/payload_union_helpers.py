"""The projection and the models the payload union tests share: ``Statuses`` keeps each
order's last status from payloads validated as ``OrderPaid`` or ``OrderShipped``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, SecretStr

from projections.api import Event, Projection, Tx, on
from tests.projection_fixtures import engine_on, log_events, stored_failure_texts

SECRET = "hunter2-s3cr3t"
AT = "2026-11-28T07:00:00+00:00"

metadata = sa.MetaData()
statuses = sa.Table(
    "union_statuses",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("at", sa.Text, nullable=False),
)


class OrderPaid(BaseModel):
    kind: Literal["paid"] = "paid"
    at: datetime
    card: SecretStr | None = None


class OrderShipped(BaseModel):
    kind: Literal["shipped"] = "shipped"
    at: datetime
    carrier: str
    card: int | None = None  # OrderPaid's card is secret: its value is never shown


class Statuses(Projection):
    """Keeps each order's last status; remembers the payload its handler received at each
    position (a batch one of whose events fails is applied again without it)."""

    name = "union_statuses"
    tables = (statuses,)
    partitions = 1

    def __init__(self) -> None:
        self.received: dict[int, Any] = {}

    def _record(self, event: Event[Any], tx: Tx) -> None:
        self.received[event.position] = event.payload
        status = type(event.payload).__name__
        row = {"order_id": event.aggregate_id, "status": status, "at": event.payload.at.isoformat()}
        tx.upsert(statuses, row)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


SHIPPED = {"kind": "shipped", "at": AT, "carrier": "dhl"}


def applied(url: str, projection: Statuses, events: list[Any]) -> tuple[Any, ...]:
    """Apply ``events`` of source ``orders``: the rows, the parked events and every text
    stored about a failure."""
    with engine_on(url, [projection], max_attempts=3, retry_backoff=0.001) as (log, store, engine):
        metadata.create_all(log.engine)
        log_events(log, events, source="orders", aggregate_type="order")
        engine.catch_up(deadline=30)
        with log.engine.connect() as conn:
            rows = {r.order_id: (r.status, r.at) for r in conn.execute(sa.select(statuses))}
        return rows, store.parked(projection.name), stored_failure_texts(log.engine)


def define(annotation: Any) -> None:
    class Refused(Projection):
        name = "union_refused"
        Payload = annotation  # found in the class body, as a handler's names are

        @on("orders", "OrderPaid")
        def paid(self, event: Event[Payload], tx: Tx) -> None:  # type: ignore[valid-type]
            pass
