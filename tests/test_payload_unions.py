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
from datetime import datetime
from typing import Annotated, Any, Optional, Union

import pytest
from pydantic import BaseModel, Field, SecretStr

from outbox.envelope import Envelope
from projections.api import Event, PayloadError, Tx, on
from tests.payload_union_helpers import (
    AT,
    SECRET,
    SHIPPED,
    OrderPaid,
    OrderShipped,
    Statuses,
    applied,
    define,
    utc,
)


class Piped(Statuses):
    @on("orders", "OrderPaid")
    @on("orders", "OrderShipped")
    def changed(self, event: Event[OrderPaid | OrderShipped], tx: Tx) -> None:
        self._record(event, tx)


class Unioned(Statuses):
    @on("orders", "OrderPaid")
    @on("orders", "OrderShipped")
    def changed(self, event: Event[Union[OrderPaid, OrderShipped]], tx: Tx) -> None:  # noqa: UP007
        self._record(event, tx)


class Discriminated(Statuses):
    @on("orders", "OrderPaid")
    @on("orders", "OrderShipped")
    def changed(
        self,
        event: Event[Annotated[OrderPaid | OrderShipped, Field(discriminator="kind")]],
        tx: Tx,
    ) -> None:
        self._record(event, tx)


class Optionally(Statuses):
    @on("orders", "OrderShipped")
    def shipped(self, event: Event[Optional[OrderShipped]], tx: Tx) -> None:  # noqa: UP045
        self._record(event, tx)


PAID = {"kind": "paid", "at": AT, "card": SECRET}
EVENTS = [
    ("o1", "OrderPaid", PAID),
    ("o1", "OrderShipped", SHIPPED),
    ("o2", "OrderShipped", {"kind": "shipped", "at": "soon", "carrier": "ups", "card": SECRET}),
    ("o3", "OrderPaid", {"kind": "paid", "at": AT}),
]


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
    kind: str, projection: type[Statuses], tag: str, database_for: Callable[[str], str]
) -> None:
    made = projection()
    rows, parked, stored = applied(database_for(kind), made, EVENTS)

    at = utc(AT)
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
    rows, parked, _ = applied(database_for("sqlite"), made, events)

    assert made.received == {1: OrderShipped(at=utc(AT), carrier="dhl")}
    assert rows == {"o1": ("OrderShipped", utc(AT).isoformat())}
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
        define(annotation)
    assert str(refused.value).startswith(f"Refused.paid: {why}"), str(refused.value)


def test_a_dataclass_payload_is_validated_too(database_for: Callable[[str], str]) -> None:
    """Any type of JSON objects pydantic validates goes through the same adapter."""

    class Dated(Statuses):
        @on("orders", "OrderPaid")
        def paid(self, event: Event[Plain], tx: Tx) -> None:
            self._record(event, tx)

    made = Dated()
    rows, parked, _ = applied(database_for("sqlite"), made, [("o1", "OrderPaid", {"at": AT})])
    assert made.received == {1: Plain(at=utc(AT))}
    assert rows == {"o1": ("Plain", utc(AT).isoformat())} and parked == []
