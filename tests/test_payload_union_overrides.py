"""A payload model's ``model_validate`` of its own (upgrading an old payload shape,
normalising a field) is called whichever annotation names it: ``Event[Model]`` called it,
a discriminated or ``left_to_right`` union, ``Optional[Model]`` or ``Annotated[Model, ...]``
never did (pydantic's ``TypeAdapter`` validates through the core schema), so the same
payload was accepted by one handler and parked by another. In a smart-mode union (``A |
B``), where it cannot take part, it is refused when the class is defined, pointing to a
``@model_validator(mode="before")``, which every annotation runs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, Union

import pytest
from pydantic import BaseModel, Field, SecretStr, model_validator

from outbox.envelope import Envelope
from projections.api import Event, PayloadError, Tx, on
from tests.payload_union_helpers import (
    AT,
    SECRET,
    SHIPPED,
    OrderShipped,
    Statuses,
    applied,
    define,
    utc,
)


class PaidUpgrading(BaseModel):
    """An OrderPaid that brings version 1's shape (``paid_at``) to its own in a
    ``model_validate`` of its own."""

    kind: Literal["paid"] = "paid"
    at: datetime
    card: SecretStr | None = None

    @classmethod
    def model_validate(cls, obj: Any, **options: Any) -> PaidUpgrading:  # type: ignore[override]
        if isinstance(obj, dict) and "paid_at" in obj:
            obj = {("at" if key == "paid_at" else key): value for key, value in obj.items()}
        return super().model_validate(obj, **options)


class _Shipped(Statuses):
    @on("orders", "OrderShipped")
    def shipped(self, event: Event[OrderShipped], tx: Tx) -> None:
        self._record(event, tx)


class UpgradingAlone(_Shipped):
    @on("orders", "OrderPaid")
    def paid(self, event: Event[PaidUpgrading], tx: Tx) -> None:
        self._record(event, tx)


class UpgradingOptional(_Shipped):
    @on("orders", "OrderPaid")
    def paid(self, event: Event[PaidUpgrading | None], tx: Tx) -> None:
        self._record(event, tx)


class UpgradingTagged(Statuses):
    @on("orders", "OrderPaid")
    @on("orders", "OrderShipped")
    def changed(
        self,
        event: Event[Annotated[PaidUpgrading | OrderShipped, Field(discriminator="kind")]],
        tx: Tx,
    ) -> None:
        self._record(event, tx)


class UpgradingInOrder(Statuses):
    @on("orders", "OrderPaid")
    @on("orders", "OrderShipped")
    def changed(
        self,
        event: Event[Annotated[PaidUpgrading | OrderShipped, Field(union_mode="left_to_right")]],
        tx: Tx,
    ) -> None:
        self._record(event, tx)


@pytest.mark.parametrize(
    ("projection", "tag"),
    [
        (UpgradingAlone, ""),
        (UpgradingOptional, ""),
        (UpgradingTagged, " (as paid)"),
        (UpgradingInOrder, " (as PaidUpgrading)"),
    ],
)
def test_a_members_own_model_validate_is_called_as_event_of_the_model_calls_it(
    projection: type[Statuses], tag: str, database_for: Callable[[str], str]
) -> None:
    """Not only by ``Event[PaidUpgrading]``: a discriminated or ``left_to_right`` union, an
    ``Optional`` called it neither (the old shape parked: ``at: Field required``)."""
    made = projection()
    events = [
        ("o1", "OrderPaid", {"kind": "paid", "paid_at": AT}),
        ("o2", "OrderShipped", SHIPPED),
        ("o3", "OrderPaid", {"kind": "paid", "paid_at": "soon", "card": SECRET}),
    ]
    rows, parked, stored = applied(database_for("sqlite"), made, events)

    at = utc(AT)
    assert made.received == {1: PaidUpgrading(at=at), 2: OrderShipped(at=at, carrier="dhl")}
    assert rows == {"o1": ("PaidUpgrading", at.isoformat()), "o2": ("OrderShipped", at.isoformat())}
    assert [(p.position, p.attempts) for p in parked] == [(3, 1)]
    reason = parked[0].reason
    assert f"at{tag}: Input should be a valid datetime" in reason, reason
    assert "(got 'soon')" in reason, reason
    assert not [text for text in stored if SECRET in text]


@pytest.mark.parametrize(
    ("annotation", "name"),
    [
        (PaidUpgrading | OrderShipped, "PaidUpgrading | OrderShipped"),
        (Union[OrderShipped, PaidUpgrading | None], "OrderShipped | PaidUpgrading | None"),  # noqa: UP007
    ],
)
def test_a_smart_mode_union_of_a_member_with_its_own_model_validate_is_refused(
    annotation: Any, name: str
) -> None:
    """pydantic's default union tries every member strictly, then laxly, and keeps the best
    fit: a ``model_validate`` of one's own cannot take part; it was silently never called."""
    with pytest.raises(TypeError) as refused:
        define(annotation)
    message = str(refused.value)
    assert message.startswith(
        f"Refused.paid: Event[{name}]: PaidUpgrading has a model_validate of its own, which a "
        "union validated in pydantic's smart mode (the default of A | B) cannot call"
    ), message
    assert "@model_validator(mode='before') of PaidUpgrading" in message, message
    assert "Field(discriminator=...)" in message and "union_mode='left_to_right'" in message


class PaidBefore(BaseModel):
    """The way README recommends: a before-validator is part of the model's core schema."""

    kind: Literal["paid"] = "paid"
    at: datetime

    @model_validator(mode="before")
    @classmethod
    def upgraded(cls, obj: Any) -> Any:
        if isinstance(obj, dict) and "paid_at" in obj:
            return {("at" if key == "paid_at" else key): value for key, value in obj.items()}
        return obj


def test_a_model_validator_before_runs_in_a_smart_mode_union() -> None:
    class Recommended(Statuses):
        @on("orders", "OrderPaid")
        def paid(self, event: Event[PaidBefore | OrderShipped], tx: Tx) -> None:
            self.received[event.position] = event.payload

    made = Recommended()
    envelope = Envelope(
        event_id="e1",
        source="orders",
        aggregate_type="order",
        aggregate_id="o1",
        event_type="OrderPaid",
        payload={"kind": "paid", "paid_at": AT},
        position=1,
    )
    assert made.handle(envelope, None)  # type: ignore[arg-type]  # never written to
    assert made.received == {1: PaidBefore(at=utc(AT))}


class CardCheck(BaseModel):
    card: str = Field(pattern=r"^\d{16}$", repr=False)


class PaidChecked(BaseModel):
    """Its own model_validate checks the payload with another model, which hides ``card``
    (and raises what is no ValidationError for a voided card)."""

    kind: Literal["paid"] = "paid"
    at: datetime
    card: str

    @classmethod
    def model_validate(cls, obj: Any, **options: Any) -> PaidChecked:  # type: ignore[override]
        if obj.get("card") == "void":
            raise ValueError("a voided card")
        CardCheck.model_validate(obj)
        return super().model_validate(obj, **options)


class CheckedAlone(_Shipped):
    @on("orders", "OrderPaid")
    def paid(self, event: Event[PaidChecked], tx: Tx) -> None:
        self._record(event, tx)


class CheckedTagged(Statuses):
    @on("orders", "OrderPaid")
    @on("orders", "OrderShipped")
    def changed(
        self,
        event: Event[Annotated[PaidChecked | OrderShipped, Field(discriminator="kind")]],
        tx: Tx,
    ) -> None:
        self._record(event, tx)


def _paid(card: str) -> Envelope:
    payload = {"kind": "paid", "at": AT, "card": card}
    return Envelope(
        event_id="e1",
        source="orders",
        aggregate_type="order",
        aggregate_id="o1",
        event_type="OrderPaid",
        payload=payload,
    )


@pytest.mark.parametrize("projection", [CheckedAlone, CheckedTagged])
def test_another_models_error_from_a_members_model_validate_shows_no_value(
    projection: type[Statuses],
) -> None:
    """Its ``loc`` names a field of the member too (``card``, not hidden there): the value
    is hidden as ``Event[PaidChecked]`` hides it, wherever the error comes from."""
    with pytest.raises(PayloadError) as rejected:
        projection().handle(_paid(SECRET), None)  # type: ignore[arg-type]  # never reached
    message = str(rejected.value)
    assert SECRET not in message, message
    assert "card" in rejected.value.fields and "(value hidden)" in message, message
    assert rejected.value.__cause__ is None and rejected.value.__suppress_context__


@pytest.mark.parametrize("projection", [CheckedAlone, CheckedTagged])
def test_what_a_members_model_validate_raises_besides_is_the_handlers_failure(
    projection: type[Statuses],
) -> None:
    """As with ``Event[PaidChecked]``: retried, then parked, not a rejected payload (pydantic
    would make a ValueError a validation error of the member)."""
    with pytest.raises(ValueError) as failed:
        projection().handle(_paid("void"), None)  # type: ignore[arg-type]  # never reached
    assert type(failed.value) is ValueError and str(failed.value) == "a voided card"
