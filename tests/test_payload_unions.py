"""A handler of several event types annotated ``event: Event[OrderPaid | OrderShipped]``
(``Union[...]``, ``Annotated[... , Field(discriminator="kind")]``, ``Optional[...]``) gets
each payload validated as the member it fits, a model instance: it got the raw dict
(``event.payload.at`` an AttributeError on every event, retried, then parked) and a payload
that fits no member reached it unchecked. Such a payload is now a ``PayloadError`` parked at
once, naming the event type, the union's members and each member's rejection, never a value
that any member declares hidden. An annotation no payload can be validated as is refused
when the class is defined, naming the handler."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Optional, Union

import pytest
import sqlalchemy as sa
from pydantic import BaseModel, Field, SecretStr

from outbox.envelope import Envelope
from projections.api import Event, PayloadError, Projection, Tx, on
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


class _Statuses(Projection):
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


class Piped(_Statuses):
    @on("orders", "OrderPaid")
    @on("orders", "OrderShipped")
    def changed(self, event: Event[OrderPaid | OrderShipped], tx: Tx) -> None:
        self._record(event, tx)


class Unioned(_Statuses):
    @on("orders", "OrderPaid")
    @on("orders", "OrderShipped")
    def changed(self, event: Event[Union[OrderPaid, OrderShipped]], tx: Tx) -> None:  # noqa: UP007
        self._record(event, tx)


class Discriminated(_Statuses):
    @on("orders", "OrderPaid")
    @on("orders", "OrderShipped")
    def changed(
        self,
        event: Event[Annotated[OrderPaid | OrderShipped, Field(discriminator="kind")]],
        tx: Tx,
    ) -> None:
        self._record(event, tx)


class Optionally(_Statuses):
    @on("orders", "OrderShipped")
    def shipped(self, event: Event[Optional[OrderShipped]], tx: Tx) -> None:  # noqa: UP045
        self._record(event, tx)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


PAID = {"kind": "paid", "at": AT, "card": SECRET}
SHIPPED = {"kind": "shipped", "at": AT, "carrier": "dhl"}
EVENTS = [
    ("o1", "OrderPaid", PAID),
    ("o1", "OrderShipped", SHIPPED),
    ("o2", "OrderShipped", {"kind": "shipped", "at": "soon", "carrier": "ups", "card": SECRET}),
    ("o3", "OrderPaid", {"kind": "paid", "at": AT}),
]


def _applied(url: str, projection: _Statuses, events: list[Any]) -> tuple[Any, ...]:
    """Apply ``events`` of source ``orders``: the rows, the parked events and every text
    stored about a failure."""
    with engine_on(url, [projection], max_attempts=3, retry_backoff=0.001) as (log, store, engine):
        metadata.create_all(log.engine)
        log_events(log, events, source="orders", aggregate_type="order")
        engine.catch_up(deadline=30)
        with log.engine.connect() as conn:
            rows = {r.order_id: (r.status, r.at) for r in conn.execute(sa.select(statuses))}
        return rows, store.parked(projection.name), stored_failure_texts(log.engine)


@pytest.mark.parametrize(
    ("kind", "projection", "tag"),
    [
        ("sqlite", Piped, "OrderShipped"),
        ("postgresql", Piped, "OrderShipped"),
        ("sqlite", Unioned, "OrderShipped"),
        ("sqlite", Discriminated, "shipped"),
    ],
)
def test_a_union_payload_is_validated_as_the_member_it_fits(
    kind: str, projection: type[_Statuses], tag: str, database_for: Callable[[str], str]
) -> None:
    made = projection()
    rows, parked, stored = _applied(database_for(kind), made, EVENTS)

    at = _time(AT)
    assert made.received == {
        1: OrderPaid(at=at, card=SecretStr(SECRET)),
        2: OrderShipped(at=at, carrier="dhl"),
        4: OrderPaid(at=at),
    }
    assert made.received[1].card.get_secret_value() == SECRET
    assert {k: s for k, (s, _) in rows.items()} == {"o1": "OrderShipped", "o3": "OrderPaid"}
    assert [(p.position, p.attempts) for p in parked] == [(3, 1)]  # at once, not retried
    reason = parked[0].reason
    assert reason.startswith("payload rejected, not retried: PayloadError("), reason
    assert "OrderShipped payload does not match OrderPaid | OrderShipped: " in reason, reason
    assert f"at (as {tag}): Input should be a valid datetime" in reason, reason
    assert "(got 'soon')" in reason, reason
    assert f"card (as {tag}): Input should be a valid integer" in reason, reason
    assert "(value hidden)" in reason, reason
    assert not [text for text in stored if SECRET in text]


def test_an_optional_model_is_validated_as_that_model(database_for: Callable[[str], str]) -> None:
    made = Optionally()
    events = [
        ("o1", "OrderShipped", SHIPPED),
        ("o2", "OrderShipped", {"kind": "shipped", "at": AT}),
    ]
    rows, parked, _ = _applied(database_for("sqlite"), made, events)

    assert made.received == {1: OrderShipped(at=_time(AT), carrier="dhl")}
    assert rows == {"o1": ("OrderShipped", _time(AT).isoformat())}
    assert [(p.position, p.attempts) for p in parked] == [(2, 1)]
    assert (
        "OrderShipped payload does not match OrderShipped | None: carrier: Field required"
        in parked[0].reason
    ), parked[0].reason


def test_a_discriminators_unknown_tag_is_not_shown_when_a_member_hides_a_value() -> None:
    """pydantic's message quotes the tag given; a member with a hidden field: the expected
    tags only."""
    envelope = Envelope(
        event_id="e1",
        source="orders",
        aggregate_type="order",
        aggregate_id="o1",
        event_type="OrderPaid",
        payload={"kind": SECRET, "at": AT},
    )
    with pytest.raises(PayloadError) as rejected:
        Discriminated().handle(envelope, None)  # type: ignore[arg-type]  # never reached
    message = str(rejected.value)
    assert SECRET not in message, message
    assert message == (
        "OrderPaid payload does not match OrderPaid | OrderShipped: (payload): Input tag found "
        "using 'kind' does not match any of the expected tags: 'paid', 'shipped' (value hidden)"
    )
    assert rejected.value.__cause__ is None and rejected.value.__suppress_context__


def test_a_union_payload_errors_fields_are_the_payloads_each_once() -> None:
    envelope = Envelope(
        event_id="e1",
        source="orders",
        aggregate_type="order",
        aggregate_id="o1",
        event_type="OrderShipped",
        payload={"kind": "shipped", "at": "soon", "card": SECRET},
    )
    with pytest.raises(PayloadError) as rejected:
        Piped().handle(envelope, None)  # type: ignore[arg-type]  # never reached
    assert rejected.value.fields == ("kind", "at", "carrier", "card")
    message = str(rejected.value)
    assert "carrier (as OrderShipped): Field required" in message, message
    assert SECRET not in message and rejected.value.__cause__ is None


class NoPayload:
    """A class pydantic has no validator for."""


class Untagged(BaseModel):
    at: datetime


@dataclasses.dataclass
class Plain:
    at: datetime


def _define(annotation: Any) -> None:
    class Refused(Projection):
        name = "union_refused"
        Payload = annotation  # found in the class body, as a handler's names are

        @on("orders", "OrderPaid")
        def paid(self, event: Event[Payload], tx: Tx) -> None:  # type: ignore[valid-type]
            pass


@pytest.mark.parametrize(
    ("annotation", "why"),
    [
        (OrderPaid | int, "Event[OrderPaid | int]: int is no type of a payload, a JSON object"),
        (OrderPaid | NoPayload, "Event[OrderPaid | NoPayload]: NoPayload is no type of a payload"),
        (NoPayload, "Event[NoPayload]: NoPayload is no type of a payload"),
        (Optional[None], "Event[None]: None is no type of a payload"),  # noqa: UP045
        (
            Annotated[OrderPaid | Untagged, Field(discriminator="kind")],
            "Event[OrderPaid | Untagged]: pydantic cannot validate payloads as that "
            "(PydanticUserError: Model 'Untagged' needs a discriminator field for key 'kind')",
        ),
    ],
)
def test_an_annotation_no_payload_can_be_validated_as_is_refused_naming_the_handler(
    annotation: Any, why: str
) -> None:
    with pytest.raises(TypeError) as refused:
        _define(annotation)
    assert str(refused.value).startswith(f"Refused.paid: {why}"), str(refused.value)


def test_a_dataclass_payload_is_validated_too(database_for: Callable[[str], str]) -> None:
    """Any type of JSON objects pydantic validates goes through the same adapter."""

    class Dated(_Statuses):
        @on("orders", "OrderPaid")
        def paid(self, event: Event[Plain], tx: Tx) -> None:
            self._record(event, tx)

    made = Dated()
    rows, parked, _ = _applied(database_for("sqlite"), made, [("o1", "OrderPaid", {"at": AT})])
    assert made.received == {1: Plain(at=_time(AT))}
    assert rows == {"o1": ("Plain", _time(AT).isoformat())} and parked == []
