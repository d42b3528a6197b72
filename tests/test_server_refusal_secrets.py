"""What the database itself refuses for a value (a duplicate of a unique column, a row a
check constraint fails, text a column type cannot read) parks its event with the server's
SQLSTATE, its message and the names of the constraint, table and column, never the value:
PostgreSQL quotes it in the message (``invalid input syntax for type inet: "..."``) and in
the DETAIL (``Key (email)=(...) already exists``, ``Failing row contains (...)``), which
would be logged and kept as the parked event's reason and traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from structlog.testing import capture_logs

from projections.api import Event, Projection, Tx, on
from tests.projection_fixtures import engine_on, log_events

SECRET = "hunter2-s3cr3t"

metadata = sa.MetaData()
accounts = sa.Table(
    "secret_accounts",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("email", sa.Text, unique=True),
    sa.Column("token", sa.Text),
    sa.Column("amount", sa.Integer, sa.CheckConstraint("amount > 0", name="positive_amount")),
)
addresses = sa.Table(
    "secret_addresses",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("address", postgresql.INET().with_variant(sa.Text, "sqlite")),
)


class Accounts(Projection):
    name = "secret_accounts"
    tables = (accounts, addresses)
    partitions = 1

    @on("shop", "Opened")
    def opened(self, event: Event[dict], tx: Tx) -> None:
        tx.upsert(accounts, {"id": event.aggregate_id, **event.payload})

    @on("shop", "Addressed")
    def addressed(self, event: Event[dict], tx: Tx) -> None:
        tx.upsert(addresses, {"id": event.aggregate_id, "address": event.payload["address"]})


def run(url: str, events: list[tuple[str, str, dict[str, Any]]], batch_size: int) -> Any:
    projection = Accounts()
    with capture_logs() as logs:
        with engine_on(
            url, [projection], batch_size=batch_size, max_attempts=2, retry_backoff=0.001
        ) as (log, store, engine):
            log_events(log, events)
            engine.catch_up(deadline=60)
            parked = sorted(store.parked(projection.name), key=lambda p: p.position)
    return parked, logs


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("batch_size", [1, 50])
def test_a_value_the_server_refuses_is_parked_without_the_value(
    kind: str, batch_size: int, database_for: Callable[[str], str]
) -> None:
    events = [
        ("a1", "Opened", {"email": f"{SECRET}@a", "token": SECRET, "amount": 1}),
        ("a2", "Opened", {"email": f"{SECRET}@a", "token": "t", "amount": 1}),  # duplicate
        ("a3", "Opened", {"email": "c@a", "token": SECRET, "amount": -1}),  # check fails
    ]
    if kind == "postgresql":
        # No inet; quoted in the value too: hidden from the first quote to the last.
        events.append(("a4", "Addressed", {"address": f'1" {SECRET} "2'}))
    parked, logs = run(database_for(kind), events, batch_size)
    assert [p.aggregate_id for p in parked] == [e[0] for e in events[1:]]
    for entry in parked:
        assert SECRET not in entry.reason, entry.reason
        assert SECRET not in (entry.detail or ""), entry.detail
    for line in logs:
        assert SECRET not in repr(line), line
    duplicate, check = parked[0].reason, parked[1].reason
    if kind == "postgresql":
        assert "23505" in duplicate and "secret_accounts_email_key" in duplicate, duplicate
        assert "23514" in check and "positive_amount" in check, check
        assert "secret_accounts" in check, check
        inet = parked[2].reason
        assert "22P02" in inet and "invalid input syntax for type inet" in inet, inet
        assert '"(value hidden)"' in inet, inet
    else:
        assert "UNIQUE constraint failed: secret_accounts.email" in duplicate, duplicate
        assert "CHECK constraint failed: positive_amount" in check, check


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_rebuild_stops_at_or_skips_a_refused_value_without_showing_it(
    kind: str, database_for: Callable[[str], str]
) -> None:
    from projections.replay import Replayer, ReplayError, ReplayOptions

    events = [(f"a{n}", "Opened", {"email": f"{n}@a", "amount": 1}) for n in range(5)]
    events[2] = ("bad", "Opened", {"email": "x@a", "token": SECRET, "amount": -1})
    projection = Accounts()
    with capture_logs() as logs:
        with engine_on(
            database_for(kind), [projection], batch_size=50, max_attempts=1, retry_backoff=0.001
        ) as (log, store, engine):
            log_events(log, events)
            engine.catch_up(deadline=60)
            with pytest.raises(ReplayError) as stopped:
                Replayer(engine.reader, projection, store, batch_size=16).run(ReplayOptions())
            summary = Replayer(engine.reader, projection, store, batch_size=16).run(
                ReplayOptions(skip_errors=True)
            )
            parked = store.parked(projection.name)
    message = str(stopped.value)
    assert "replay stopped at shop:3" in message and "positive_amount" in message, message
    assert SECRET not in message and SECRET not in repr(stopped.value.error), message
    assert [s.position for s in summary.skipped] == [3]
    for skipped in summary.skipped:
        assert "positive_amount" in skipped.error, skipped.error
        assert SECRET not in skipped.error, skipped.error
        assert SECRET not in (skipped.detail or ""), skipped.detail
    assert [p.position for p in parked] == [3]
    assert SECRET not in parked[0].reason and SECRET not in (parked[0].detail or "")
    for line in logs:
        assert SECRET not in repr(line), line


class Unconvertible:
    """A value whose conversion fails with an error quoting what it holds."""

    def __float__(self) -> float:
        raise ValueError(f"cannot read {SECRET}")

    def __repr__(self) -> str:
        return f"Unconvertible({SECRET})"


rates = sa.Table(
    "secret_rates",
    sa.MetaData(),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("rate", sa.Float),
)


class Rates(Projection):
    name = "secret_rates"
    tables = (rates,)
    partitions = 1

    @on("shop", "Rated")
    def rated(self, event: Event[dict], tx: Tx) -> None:
        tx.upsert(rates, {"id": event.aggregate_id, "rate": Unconvertible()})


def test_a_bind_processors_error_is_parked_without_its_message(
    sqlite_database: Callable[[], str],
) -> None:
    """SQLAlchemy binds a float column's value with ``float()``: the error it raised was the
    parked reason and, wrapped by SQLAlchemy with the statement's parameters, its traceback."""
    projection = Rates()
    with capture_logs() as logs:
        with engine_on(sqlite_database(), [projection], max_attempts=1) as (log, store, engine):
            log_events(log, [("r1", "Rated", {})])
            engine.catch_up(deadline=60)
            parked = store.parked(projection.name)
    assert [p.aggregate_id for p in parked] == ["r1"]
    assert "ValueError" in parked[0].reason, parked[0].reason
    assert SECRET not in parked[0].reason, parked[0].reason
    assert SECRET not in (parked[0].detail or ""), parked[0].detail
    for line in logs:
        assert SECRET not in repr(line), line


class Lookups(Projection):
    """Its handler looks a value up on a connection of its own, and raises its own error
    from the database's refusal."""

    name = "secret_lookups"
    tables = (rates,)
    partitions = 1
    dsn = ""

    @on("shop", "Looked")
    def looked(self, event: Event[dict], tx: Tx) -> None:
        with psycopg.connect(self.dsn) as conn:
            try:
                conn.execute("select cast(%s as inet)", (SECRET,))
            except psycopg.Error as exc:
                raise LookupError("the address lookup failed") from exc


def test_a_database_error_a_handler_raised_from_is_kept_without_its_value(
    pg_database: Callable[[], str],
) -> None:
    """The handler's own error is its own to word; the database's it was raised from, kept
    in the parked traceback, quoted the value."""
    url = pg_database()
    projection = Lookups()
    projection.dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with engine_on(url, [projection], max_attempts=1) as (log, store, engine):
        log_events(log, [("l1", "Looked", {})])
        engine.catch_up(deadline=60)
        parked = store.parked(projection.name)
    assert [p.aggregate_id for p in parked] == ["l1"]
    assert "LookupError('the address lookup failed')" in parked[0].reason, parked[0].reason
    detail = parked[0].detail or ""
    assert "InvalidTextRepresentation" in detail and "22P02" in detail, detail
    assert SECRET not in detail, detail
