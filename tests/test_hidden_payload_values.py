"""A rejected payload's secret values stay hidden wherever its parked event's information
goes (the reason, the stored detail, the failures table, the log lines), whatever shape
the model declares them in: an alias (pydantic's ``loc`` names it), a dataclass or a
``TypedDict`` field, ``Secret[...]`` (or a subclass), a validator whose message holds the
value, a model with ``hide_input_in_errors``, a ``model_validate`` of its own that validates
another model, a type of its own (or a masking serializer) declared ``Field(repr=False)``."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Annotated, Any

import pydantic
import pytest
import sqlalchemy as sa
import structlog
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PlainSerializer,
    Secret,
    SecretStr,
    ValidationError,
)
from pydantic_core import core_schema
from typing_extensions import TypedDict

from projections.api import Event, PayloadError, Projection, Tx, on, payload_error
from projections.engine import RetryLater
from projections.store import Lane
from tests.projection_fixtures import append_tenant_events, engine_on, stored_failure_texts

SECRET = "hunter2-s3cr3t"

metadata = sa.MetaData()
seen = sa.Table("hidden_seen", metadata, sa.Column("entry", sa.Text, primary_key=True))


class Login(BaseModel):
    password: SecretStr = Field(alias="pw")


class Swapped(BaseModel):
    secret: SecretStr = Field(alias="token")
    token: str = Field(alias="other")


@dataclasses.dataclass
class PlainCreds:
    key: SecretStr


@pydantic.dataclasses.dataclass
class PydanticCreds:
    key: str = dataclasses.field(repr=False)


class DictCreds(TypedDict):
    key: SecretStr


class Inner(BaseModel):
    key: SecretStr


class Validated(BaseModel):
    key: SecretStr

    @pydantic.field_validator("key", mode="before")
    @classmethod
    def known(cls, value: Any) -> Any:
        if value != "ok":
            raise ValueError(f"unknown key {value}")
        return value


class Quiet(BaseModel):
    model_config = ConfigDict(hide_input_in_errors=True)
    key: str


class OwnValidate(BaseModel):
    data: dict[str, Any]

    @classmethod
    def model_validate(cls, obj: Any, **options: Any) -> OwnValidate:  # type: ignore[override]
        Inner.model_validate(obj["data"])
        return super().model_validate(obj, **options)


class ApiKey:
    """A type of its own wrapping a ``SecretStr``: not recognised as secret by its schema
    (README: declare it ``Field(repr=False)``, or subclass ``Secret``)."""

    def __init__(self, secret: SecretStr) -> None:
        self.secret = secret

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(cls, handler.generate_schema(SecretStr))


class Token(Secret[str]):
    pass


class Wrapped(BaseModel):
    key: ApiKey | None = Field(None, repr=False)
    token: Token | None = None
    masked: Annotated[str, PlainSerializer(lambda _: "***")] | None = Field(None, repr=False)


class Shapes(BaseModel):
    login: Login | dict[str, int] | None = None
    plain: PlainCreds | None = None
    pydantic_creds: PydanticCreds | None = None
    typed: DictCreds | None = None
    pin: Secret[int] | None = None


CASES: list[tuple[type[BaseModel], Any]] = [
    (Login, {"pw": [SECRET]}),
    (Swapped, {"token": [SECRET], "other": "o"}),
    (Shapes, {"login": {"pw": [SECRET]}}),
    (Shapes, {"plain": {"key": [SECRET]}}),
    (Shapes, {"pydantic_creds": {"key": [SECRET]}}),
    (Shapes, {"typed": {"key": [SECRET]}}),
    (Shapes, {"typed": SECRET}),
    (Shapes, {"pin": SECRET}),
    (Validated, {"key": SECRET}),
    (Quiet, {"key": [SECRET]}),
    (OwnValidate, {"data": {"key": [SECRET]}}),
    (Wrapped, {"key": [SECRET]}),
    (Wrapped, {"token": [SECRET]}),
    (Wrapped, {"masked": [SECRET]}),
]


@pytest.mark.parametrize(("model", "payload"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_a_rejected_secret_value_is_hidden_whatever_shape_declares_it(
    model: type[BaseModel], payload: Any
) -> None:
    with pytest.raises(ValidationError) as rejected:
        model.model_validate(payload)
    message = str(payload_error("Logged", model, rejected.value))
    assert "(value hidden)" in message, message
    assert SECRET not in message and "hunter2" not in message, message


def test_a_plain_fields_value_is_still_shown_beside_an_aliased_secret() -> None:
    class Both(BaseModel):
        password: SecretStr = Field(alias="pw")
        count: int

    with pytest.raises(ValidationError) as rejected:
        Both.model_validate({"pw": "fine", "count": "many"})
    assert "count: Input should be a valid integer" in str(
        payload_error("Logged", Both, rejected.value)
    )
    assert "(got 'many')" in str(payload_error("Logged", Both, rejected.value))


class Keys(Projection):
    name = "hidden_keys"
    tables = (seen,)
    partitions = 1

    @on("bank", "Shaped")
    def shaped(self, event: Event[Shapes], tx: Tx) -> None:
        tx.upsert(seen, {"entry": event.aggregate_id})

    @on("bank", "Checked")
    def checked(self, event: Event[Validated], tx: Tx) -> None:
        tx.upsert(seen, {"entry": event.aggregate_id})

    @on("bank", "Own")
    def own(self, event: Event[OwnValidate], tx: Tx) -> None:
        tx.upsert(seen, {"entry": event.aggregate_id})


def test_a_parked_events_stored_rows_and_log_lines_never_show_the_secret(
    pg_database: Callable[[], str],
) -> None:
    events = [
        (None, "a1", "Shaped", {"login": {"pw": [SECRET]}}),
        (None, "a2", "Shaped", {"typed": {"key": [SECRET]}}),
        (None, "a3", "Checked", {"key": SECRET}),
        (None, "a4", "Own", {"data": {"key": [SECRET]}}),
    ]
    with (
        engine_on(pg_database(), [Keys()], max_attempts=5, retry_backoff=30) as (log, store, eng),
        structlog.testing.capture_logs() as logged,
    ):
        append_tenant_events(log, events)
        eng.process(Lane("hidden_keys", "bank", 0))
        parked = store.parked("hidden_keys")
        stored = stored_failure_texts(log.engine)

    assert len(parked) == 4
    assert all("payload rejected, not retried: PayloadError(" in p.reason for p in parked)
    assert [line for line in logged if line["event"] == "event parked"], logged
    for text in [*stored, *(repr(line) for line in logged)]:
        assert SECRET not in text and "hunter2" not in text, text
    with pytest.raises(PayloadError):  # the detail was made from the error, not pydantic's
        Keys().handle(_shaped({"login": {"pw": [SECRET]}}), None)  # type: ignore[arg-type]


def _shaped(payload: dict[str, Any]) -> Any:
    from outbox.envelope import Envelope

    return Envelope(
        event_id="e1",
        source="bank",
        aggregate_type="account",
        aggregate_id="a1",
        event_type="Shaped",
        payload=payload,
    )


def test_pydantics_message_naming_a_character_of_a_hidden_value_is_left_out() -> None:
    class Keyed(BaseModel):
        key: uuid.UUID = Field(repr=False)

    with pytest.raises(ValidationError) as rejected:
        Keyed.model_validate({"key": "1234-" + SECRET})
    message = str(payload_error("Logged", Keyed, rejected.value))
    assert "key: rejected: uuid_parsing (message hidden) (value hidden)" in message, message
    assert "found" not in message, message


def _upcast_checked(payload: dict[str, Any]) -> dict[str, Any]:
    Inner.model_validate(payload)  # the upcaster checks the old shape with a model of its own
    return {**payload, "schema_version": 2}


class OwnModels(Projection):
    name = "hidden_own"
    tables = (seen,)
    partitions = 1
    upcasters = {("Upcast", 1): _upcast_checked}

    @on("bank", "Upcast")
    def upcast_one(self, event: Event[dict[str, Any]], tx: Tx) -> None:
        tx.upsert(seen, {"entry": event.aggregate_id})

    @on("bank", "Checks")
    def checks(self, event: Event[dict[str, Any]], tx: Tx) -> None:
        Inner.model_validate(event.payload)  # the handler validates a model of its own


def test_a_handlers_or_upcasters_own_validation_error_is_retried_without_its_values(
    pg_database: Callable[[], str],
) -> None:
    """Not the payload's model: the handler's failure, retried then parked as before, but
    pydantic's text (which shows the values given) is not stored, logged or raised."""
    events = [
        (None, "a1", "Upcast", {"key": [SECRET]}),
        (None, "a2", "Checks", {"key": [SECRET]}),
    ]
    with (
        engine_on(pg_database(), [OwnModels()], max_attempts=2, retry_backoff=0) as (
            log,
            store,
            eng,
        ),
        structlog.testing.capture_logs() as logged,
    ):
        append_tenant_events(log, events)
        for _ in range(4):
            try:
                eng.process(Lane("hidden_own", "bank", 0))
            except RetryLater:
                continue
        parked = store.parked("hidden_own")
        stored = stored_failure_texts(log.engine)

    assert [(p.position, p.attempts) for p in parked] == [(1, 2), (2, 2)]
    for entry in parked:
        assert entry.reason.startswith("handler failed 2 times: "), entry.reason
        assert "key: Input should be a valid string (value hidden)" in entry.reason
        assert "Inner" in entry.reason and "Traceback" in entry.detail
    for text in [*stored, *(repr(line) for line in logged)]:
        assert SECRET not in text and "hunter2" not in text, text
