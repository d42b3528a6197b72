"""Handler failures no retry can change park their event at the first failure: a payload its
handler's model rejects (:class:`PayloadError`, after the projection's upcasters too), and a
row or document a tenant projection cannot place (:class:`TenantError`: an event without a
tenant, or a row naming another tenant). The reason says so, and how to apply the event
once a fix is deployed (``readmodel parked retry``). An upcaster's own exception is the
handler's failure: retried. Live and on every store alike (one engine path)."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel, Field, SecretStr, ValidationError

from outbox.envelope import Envelope
from outbox.log import EventLog
from projections.api import Event, PayloadError, Projection, TenantError, Tx, on, payload_error
from projections.engine import ProjectionEngine, RetryLater
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.store import HandlerFailed, Lane, ParkedEvent
from tests.projection_fixtures import append_tenant_events, engine_on, stored_failure_texts

ATTEMPTS = 5

metadata = sa.MetaData()
entries = sa.Table(
    "strict_entries",
    metadata,
    sa.Column("entry", sa.Text, primary_key=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("memo", sa.Text),
)
tenant_entries = sa.Table(
    "strict_tenant_entries",
    metadata,
    sa.Column("entry", sa.Text, primary_key=True),
    sa.Column("tenant", sa.Text),
    sa.Column("amount", sa.BigInteger, nullable=False),
)


class Line(BaseModel):
    sku: str
    qty: int


class Booked(BaseModel):
    amount: int
    memo: str
    lines: list[Line] = []


class Strict(Projection):
    name = "strict"
    tables = (entries,)
    partitions = 1
    upcasters = {
        # version 1 said "cents"; the upcaster of a "broken" payload raises on its own
        ("Booked", 1): lambda p: {"amount": p.pop("cents"), **p, "schema_version": 2},
    }

    @on("bank", "Booked")
    def booked(self, event: Event[Booked], tx: Tx) -> None:
        row = tx.get(entries, event.aggregate_id)
        total = (row["amount"] if row else 0) + event.payload.amount
        tx.upsert(
            entries, {"entry": event.aggregate_id, "amount": total, "memo": event.payload.memo}
        )


def _accept_words(payload: dict[str, Any]) -> dict[str, Any]:
    words = {"lots": 100}
    return {**payload, "amount": words.get(payload["amount"], payload["amount"])}


class Fixed(Strict):
    """The deploy that fixes it: an upcaster reads the amounts the first one rejected."""

    upcasters = {("Booked", 2): _accept_words}


class TenantEntries(Projection):
    name = "strict_tenants"
    tables = (tenant_entries,)
    partitions = 1
    tenant_column = "tenant"

    @on("bank", "Booked")
    def booked(self, event: Event[dict], tx: Tx) -> None:
        row = {"entry": event.aggregate_id, "amount": event.payload["amount"]}
        if "tenant" in event.payload:
            row["tenant"] = event.payload["tenant"]
        tx.upsert(tenant_entries, row)


def _rows(log: EventLog, table: sa.Table) -> dict[str, int]:
    with log.engine.connect() as conn:
        return {r.entry: r.amount for r in conn.execute(sa.select(table))}


def _by_position(parked: list[ParkedEvent]) -> dict[int, ParkedEvent]:
    return {p.position: p for p in parked}


GOOD = {"amount": 5, "memo": "fine", "schema_version": 2}


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_payload_its_model_rejects_parks_at_the_first_failure_and_retries_once_fixed(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """``retry_backoff=30``: a retry would raise RetryLater instead of going on."""
    url = database_for(kind)
    with engine_on(url, [Strict()], max_attempts=ATTEMPTS, retry_backoff=30) as (
        log,
        store,
        engine,
    ):
        append_tenant_events(
            log,
            [
                (None, "bad", "Booked", {"amount": "lots", "memo": "m", "schema_version": 2}),
                (None, "ok", "Booked", GOOD),
                (None, "bad", "Booked", GOOD),  # held behind the parked one
                (None, "nested", "Booked", {**GOOD, "lines": [{"sku": "a", "qty": "many"}]}),
                (None, "ok", "Booked", GOOD),
            ],
        )
        progress = engine.process(Lane("strict", "bank", 0))

        assert progress.checkpoint == 5
        assert _rows(log, entries) == {"ok": 10}
        parked = _by_position(store.parked("strict"))
        assert sorted(parked) == [1, 3, 4]
        first = parked[1]
        assert first.attempts == 1, first.reason
        assert first.reason.startswith("payload rejected, not retried: PayloadError("), first.reason
        assert (
            "Booked payload does not match Booked: amount: Input should be a valid integer, "
            "unable to parse string as an integer (got 'lots')" in first.reason
        ), first.reason
        assert "readmodel parked retry" in first.reason, first.reason
        assert parked[3].reason == "held: an earlier event of this aggregate is parked (bank:1)"
        assert parked[4].attempts == 1
        assert "lines.0.qty: Input should be a valid integer" in parked[4].reason

        # A deploy whose upcaster reads the word: the parked events apply, in order.
        fixed = ProjectionEngine(engine.reader, [Fixed()], {"default": store})
        assert fixed.retry(first) == 2
        assert _rows(log, entries) == {"ok": 10, "bad": 105}
        assert [p.position for p in store.parked("strict")] == [4]


def test_the_payload_error_names_each_field_its_model_rejected() -> None:
    projection = Strict()
    event = _envelope({"amount": [1], "schema_version": 2})
    with pytest.raises(PayloadError) as error:
        projection.handle(event, None)  # type: ignore[arg-type]
    assert error.value.fields == ("amount", "memo")
    assert str(error.value) == (
        "Booked payload does not match Booked: amount: Input should be a valid integer "
        "(got [1]); memo: Field required"
    )
    upcast = _envelope({"cents": "x"})  # version 1: the upcaster turns cents into amount
    with pytest.raises(PayloadError) as error:
        projection.handle(upcast, None)  # type: ignore[arg-type]
    assert error.value.fields == ("amount", "memo")
    assert str(error.value).startswith("Booked payload after upcasting does not match Booked: ")
    huge = _envelope({"amount": "x" * 500, "memo": "m", "schema_version": 2})
    with pytest.raises(PayloadError) as error:
        projection.handle(huge, None)  # type: ignore[arg-type]
    assert len(str(error.value)) < 200, str(error.value)


def test_a_payload_errors_long_field_path_is_shortened_in_its_message() -> None:
    class Counts(BaseModel):
        counts: dict[str, int]

    key = "k" * 5000
    with pytest.raises(ValidationError) as rejected:
        Counts.model_validate({"counts": {key: "many"}})
    error = payload_error("Counted", Counts, rejected.value)
    assert error.fields == (f"counts.{key}",)  # whole, for code
    assert len(str(error)) < 250, str(error)
    # A mapping's key is data: never shown (tests/test_payload_error_keys.py).
    assert "counts.*: Input should be a valid integer" in str(error), str(error)
    assert "kkkk" not in str(error), str(error)


def test_a_payload_rejected_after_upcasting_parks_at_once_an_upcasters_own_error_is_retried(
    pg_database: Callable[[], str],
) -> None:
    with engine_on(pg_database(), [Strict()], max_attempts=2, retry_backoff=0.001) as (
        log,
        store,
        engine,
    ):
        append_tenant_events(
            log,
            [
                (None, "upcast", "Booked", {"cents": "x", "memo": "m"}),  # v1, fails as v2
                (None, "broken", "Booked", {"memo": "m"}),  # v1 without cents: KeyError
                (None, "ok", "Booked", GOOD),
            ],
        )
        lane = Lane("strict", "bank", 0)
        with pytest.raises(RetryLater) as retry:
            engine.process(lane)
        assert retry.value.attempts == 1 and retry.value.event.position == 2
        assert [(p.position, p.attempts) for p in store.parked("strict")] == [(1, 1)]
        assert engine.process(lane).checkpoint == 3
        parked = _by_position(store.parked("strict"))
        rows = _rows(log, entries)
    assert parked[1].reason.startswith(
        'payload rejected, not retried: PayloadError("Booked payload after upcasting does not '
        "match Booked: amount: Input should be a valid integer, unable to parse string as an "
        "integer (got 'x')\")"
    ), parked[1].reason
    assert parked[2].attempts == 2
    assert parked[2].reason == "handler failed 2 times: KeyError('cents')"
    assert rows == {"ok": 5}


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_row_a_tenant_projection_cannot_place_parks_at_the_first_failure(
    kind: str, database_for: Callable[[str], str]
) -> None:
    """An event without a tenant, or a row naming another tenant (the handler's bug, which a
    deploy fixes: the reason says how to apply it then, naming the tenant column, not the
    value the row holds there)."""
    projection = TenantEntries()
    with engine_on(database_for(kind), [projection], max_attempts=ATTEMPTS, retry_backoff=30) as (
        log,
        store,
        engine,
    ):
        append_tenant_events(
            log,
            [
                (None, "none", "Booked", {"amount": 1}),
                ("acme", "other", "Booked", {"amount": 2, "tenant": "globex"}),
                ("acme", "ok", "Booked", {"amount": 3}),
            ],
        )
        assert engine.process(Lane(projection.name, "bank", 0)).checkpoint == 3
        parked = _by_position(store.parked(projection.name))
        assert _rows(log, tenant_entries) == {"ok": 3}
    assert sorted(parked) == [1, 2]
    for entry in parked.values():
        assert entry.attempts == 1, entry.reason
        assert entry.reason.startswith("tenant refused, not retried: TenantError("), entry.reason
        assert "readmodel parked retry" in entry.reason, entry.reason
    assert "Booked at bank:1 has no tenant" in parked[1].reason
    # The row's value (any column's value may land there: a hidden payload field) is not shown.
    assert "names another tenant than the event's ('acme') in 'tenant'" in parked[2].reason
    assert "globex" not in parked[2].reason, parked[2].reason


class StrictDocs(Projection):
    name = "strict_docs"
    store = "docs"
    collections = ("strict_docs",)
    partitions = 1
    tenant_column = "tenant"

    @on("bank", "Booked")
    def booked(self, event: Event[Booked], tx: Any) -> None:
        tx.upsert("strict_docs", {"_id": event.aggregate_id, "amount": event.payload.amount})


@contextmanager
def _document_engine(pg_url: str, mongo_url: str) -> Iterator[tuple[EventLog, MongoStore, Any]]:
    log = EventLog(pg_url)
    log.create_tables()
    store = MongoStore(mongo_url)
    projection = StrictDocs()
    store.create_tables([projection])
    engine = ProjectionEngine(
        LogReader(log), [projection], {"docs": store}, max_attempts=ATTEMPTS, retry_backoff=30
    )
    try:
        yield log, store, engine
    finally:
        engine.close()
        log.close()


def test_a_document_projection_parks_rejected_payloads_and_untenanted_events_at_once(
    pg_database: Callable[[], str], mongo_database: Callable[[], str]
) -> None:
    with _document_engine(pg_database(), mongo_database()) as (log, store, engine):
        append_tenant_events(
            log,
            [
                ("acme", "bad", "Booked", {"amount": "lots", "memo": "m"}),
                (None, "none", "Booked", GOOD),
                ("acme", "ok", "Booked", GOOD),
                ("acme", "bad", "Booked", GOOD),
            ],
        )
        lane = Lane("strict_docs", "bank", 0)
        checkpoint = 0
        for _ in range(3):  # each pass parks at most one event; none raises RetryLater
            checkpoint = engine.process(lane).checkpoint
            if checkpoint == 4:
                break
        found = {d["_id"]: d["amount"] for d in store.database["strict_docs"].find()}
        parked = _by_position(store.parked("strict_docs"))

    assert checkpoint == 4
    assert found == {"ok": 5}
    assert sorted(parked) == [1, 2, 4]
    assert parked[1].attempts == 1 and parked[2].attempts == 1
    assert parked[1].reason.startswith("payload rejected, not retried: PayloadError("), parked[1]
    assert "amount: Input should be a valid integer" in parked[1].reason
    assert parked[2].reason.startswith("tenant refused, not retried: TenantError("), parked[2]
    assert "held: an earlier event of this aggregate is parked (bank:1)" == parked[4].reason


def test_payload_and_tenant_errors_keep_their_attributes_through_pickle() -> None:
    """Dramatiq and multiprocessing pickle exceptions: ``fields`` and ``for_good`` (and
    the message) must come back as they were, not as the constructor's defaults."""
    with pytest.raises(PayloadError) as rejected:
        Strict().handle(_envelope({"amount": [1], "schema_version": 2}), None)  # type: ignore[arg-type]
    tenant = TenantError("another tenant's _id", for_good=False)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        payload = pickle.loads(pickle.dumps(rejected.value, protocol=protocol))
        assert type(payload) is PayloadError
        assert payload.fields == rejected.value.fields == ("amount", "memo")
        assert str(payload) == str(rejected.value)
        again = pickle.loads(pickle.dumps(tenant, protocol=protocol))
        assert (type(again), again.for_good, str(again)) == (TenantError, False, str(tenant))
        assert pickle.loads(pickle.dumps(TenantError("no tenant"), protocol=protocol)).for_good


def test_a_handler_failure_survives_pickle_with_its_event_error_and_detail() -> None:
    """Dramatiq and multiprocessing pickle exceptions: a ``HandlerFailed`` comes back with
    its event, its error (still a ``PayloadError`` with its fields), detail and ``refused``."""
    with pytest.raises(PayloadError) as rejected:
        Strict().handle(_envelope({"amount": [1], "schema_version": 2}), None)  # type: ignore[arg-type]
    failed = HandlerFailed(
        _envelope({"amount": [1]}), rejected.value, "Traceback ...", refused=True
    )
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        again = pickle.loads(pickle.dumps(failed, protocol=protocol))
        assert type(again) is HandlerFailed and str(again) == str(failed)
        assert (again.event, again.detail, again.refused) == (failed.event, "Traceback ...", True)
        assert type(again.error) is PayloadError and again.error.fields == ("amount", "memo")


CARD = "4111111111111111"
PIN = "pin-9876"


class Billing(BaseModel):
    holder: str
    pin: str = Field(repr=False)


class Charged(BaseModel):
    amount: int
    card: SecretStr
    billing: Billing | None = None
    tokens: list[SecretStr] = []


class Charges(Projection):
    name = "charges"
    tables = (entries,)
    partitions = 1

    @on("bank", "Charged")
    def charged(self, event: Event[Charged], tx: Tx) -> None:
        tx.upsert(entries, {"entry": event.aggregate_id, "amount": event.payload.amount})


def test_a_rejected_secret_value_is_never_shown_in_a_parked_events_reason(
    pg_database: Callable[[], str],
) -> None:
    """A ``SecretStr`` field, a ``Field(repr=False)`` one (in a nested model), a nested
    model holding one: the reason names the field, never the value; a plain field's value
    is still shown. The stored detail (the traceback) does not show it either."""
    charges = [
        {"amount": 1, "card": int(CARD)},  # not a string: rejected
        {"amount": 1, "card": "c", "billing": {"holder": "h", "pin": [PIN]}},
        {"amount": 1, "card": "c", "billing": f"{PIN}|{CARD}"},  # the model, given text
        {"amount": 1, "card": "c", "tokens": [CARD, int(CARD)]},
        {"amount": "lots", "card": CARD},  # another field rejected: the card stays hidden
    ]
    with engine_on(pg_database(), [Charges()], max_attempts=ATTEMPTS, retry_backoff=30) as (
        log,
        store,
        engine,
    ):
        append_tenant_events(log, [(None, f"a{n}", "Charged", p) for n, p in enumerate(charges)])
        engine.process(Lane("charges", "bank", 0))
        parked = _by_position(store.parked("charges"))
        stored = stored_failure_texts(log.engine)

    assert sorted(parked) == [1, 2, 3, 4, 5]
    reasons = [parked[n].reason for n in range(1, 6)]
    for reason in reasons:
        assert reason.startswith("payload rejected, not retried: PayloadError("), reason
    assert "card: Input should be a valid string (value hidden)" in reasons[0], reasons[0]
    assert "billing.pin: Input should be a valid string (value hidden)" in reasons[1]
    assert "billing: Input should be a valid dictionary" in reasons[2], reasons[2]
    assert "tokens.1: Input should be a valid string (value hidden)" in reasons[3]
    assert "amount: Input should be a valid integer" in reasons[4] and "'lots'" in reasons[4]
    assert stored, "nothing stored"
    for text in stored:
        assert CARD not in text and PIN not in text and "4111" not in text, text


def _envelope(payload: dict[str, Any]) -> Envelope:
    return Envelope(
        event_id="e1",
        source="bank",
        aggregate_type="account",
        aggregate_id="a1",
        event_type="Booked",
        payload=payload,
    )
