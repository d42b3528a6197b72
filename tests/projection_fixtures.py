"""Projections used by the tests (importable by worker subprocesses through config)."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel

from outbox.envelope import Envelope, aggregate_hash
from outbox.log import EventLog
from outbox.rows import LogRecord
from outbox.schema import event_log, log_heads
from projections.api import Event, Projection, Tx, on
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.sql_store import SqlStore
from projections.store_tables import failures, parked_events

metadata = sa.MetaData()

account_totals = sa.Table(
    "account_totals",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("events", sa.Integer, nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.Integer, nullable=False),
    sa.Column("violations", sa.Integer, nullable=False),
)

balances = sa.Table(
    "balances",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("balance", sa.BigInteger, nullable=False),
    sa.Column("rejected", sa.Integer, nullable=False),
)

order_lines = sa.Table(  # auxiliary: remembered so that a cancellation can subtract them
    "aux_order_lines",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("customer", sa.Text, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
)

customer_spend = sa.Table(
    "customer_spend",
    metadata,
    sa.Column("customer", sa.Text, primary_key=True),
    sa.Column("email", sa.Text),
    sa.Column("orders", sa.Integer, nullable=False),
    sa.Column("spent", sa.BigInteger, nullable=False),
)


SLOW = "READMODEL_TEST_SECONDS_PER_EVENT"
"""Set in a process's environment, the test projections' handlers sleep that long per
event: a rebuild a test interrupts half-way is then still running when its signal comes,
however loaded the machine."""


def slow_down() -> None:
    """Sleep :data:`SLOW` seconds when it is set."""
    seconds = os.environ.get(SLOW)
    if seconds:
        time.sleep(float(seconds))


HANG_ON = "READMODEL_TEST_HANG_ON"
"""Set to an aggregate id in a process's environment, :class:`Totals`' handler never returns
for that aggregate's events: a hung handler, in an endless loop in Python code, or, with
:data:`HANG_HOW` ``"lock"``, waiting in PostgreSQL for :data:`HANG_LOCK`, an advisory lock
the test holds, or, with ``"socket"``, reading a socket no one writes to, without a timeout
(blocked outside Python: it cannot be interrupted), or, with ``"server"``, reading one byte,
without a timeout, from the server listening on :data:`HANG_PORT` (the test's: the handler
returns once the server answers)."""
HANG_HOW = "READMODEL_TEST_HANG_HOW"
HANG_PORT = "READMODEL_TEST_HANG_PORT"
HANG_LOCK = 4242


def hang_on(aggregate_id: str, tx: Tx) -> None:
    """Never return when :data:`HANG_ON` names ``aggregate_id``."""
    if os.environ.get(HANG_ON) != aggregate_id:
        return
    if os.environ.get(HANG_HOW) == "lock":
        tx.conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({HANG_LOCK})"))  # type: ignore[attr-defined]
    if os.environ.get(HANG_HOW) == "socket":
        reader, writer = socket.socketpair()  # the writer never writes, nor closes
        reader.recv(1)
        writer.close()
    if os.environ.get(HANG_HOW) == "server":
        with socket.create_connection(("127.0.0.1", int(os.environ[HANG_PORT]))) as conn:
            conn.settimeout(None)
            conn.recv(1)
        return
    while True:
        time.sleep(0.05)


class Deposited(BaseModel):
    amount: int
    seq: int


class Totals(Projection):
    """Running totals per aggregate; counts out-of-order events as violations."""

    name = "totals"
    tables = (account_totals,)

    @on("bank", "Deposited")
    def deposited(self, event: Event[Deposited], tx: Tx) -> None:
        slow_down()
        hang_on(event.aggregate_id, tx)
        if os.environ.get("READMODEL_TEST_FAIL_ON") == event.aggregate_id and (
            event.payload.seq >= int(os.environ.get("READMODEL_TEST_FAIL_FROM_SEQ", "0"))
        ):
            raise RuntimeError(f"refusing {event.aggregate_id}")
        row = tx.get(account_totals, event.aggregate_id) or {
            "account": event.aggregate_id,
            "events": 0,
            "total": 0,
            "last_seq": 0,
            "violations": 0,
        }
        violation = 0 if event.payload.seq == row["last_seq"] + 1 else 1
        tx.upsert(
            account_totals,
            {
                "account": event.aggregate_id,
                "events": row["events"] + 1,
                "total": row["total"] + event.payload.amount,
                "last_seq": event.payload.seq,
                "violations": row["violations"] + violation,
            },
        )


class Withdrawn(BaseModel):
    amount: int


class Balances(Projection):
    """Read-modify-write: a withdrawal is rejected when the balance it sees is too low."""

    name = "balances"
    tables = (balances,)
    partitions = 2

    def _row(self, tx: Tx, account: str) -> dict[str, Any]:
        return tx.get(balances, account) or {"account": account, "balance": 0, "rejected": 0}

    @on("bank", "Deposited")
    def deposited(self, event: Event[Deposited], tx: Tx) -> None:
        row = self._row(tx, event.aggregate_id)
        tx.upsert(balances, {**row, "balance": row["balance"] + event.payload.amount})

    @on("bank", "Withdrawn")
    def withdrawn(self, event: Event[Withdrawn], tx: Tx) -> None:
        row = self._row(tx, event.aggregate_id)
        if row["balance"] < event.payload.amount:
            tx.upsert(balances, {**row, "rejected": row["rejected"] + 1})
        else:
            tx.upsert(balances, {**row, "balance": row["balance"] - event.payload.amount})


class OrderPlaced(BaseModel):
    customer: str
    amount: int


class UserRegistered(BaseModel):
    email: str


class CustomerSpend(Projection):
    """Two sources (orders, auth) and an auxiliary table for cancellations."""

    name = "customer_spend"
    tables = (customer_spend, order_lines)
    upcasters = {
        # version 1 of OrderPlaced carried "cents" instead of "amount"
        ("OrderPlaced", 1): lambda p: {**p, "amount": p.pop("cents"), "schema_version": 2},
    }

    def _row(self, tx: Tx, customer: str) -> dict[str, Any]:
        return tx.get(customer_spend, customer) or {
            "customer": customer,
            "email": None,
            "orders": 0,
            "spent": 0,
        }

    def prefetch(self, events: Sequence[Envelope], tx: Tx) -> None:
        customers = [e.payload["customer"] for e in events if e.event_type == "OrderPlaced"]
        tx.prefetch(customer_spend, customers)

    @on("orders", "OrderPlaced")
    def placed(self, event: Event[OrderPlaced], tx: Tx) -> None:
        row = self._row(tx, event.payload.customer)
        tx.upsert(
            order_lines,
            {
                "order_id": event.aggregate_id,
                "customer": event.payload.customer,
                "amount": event.payload.amount,
            },
        )
        tx.upsert(
            customer_spend,
            {**row, "orders": row["orders"] + 1, "spent": row["spent"] + event.payload.amount},
        )

    @on("orders", "OrderCancelled")
    def cancelled(self, event: Event[dict], tx: Tx) -> None:
        line = tx.get(order_lines, event.aggregate_id)
        if line is None:
            return
        row = self._row(tx, line["customer"])
        tx.upsert(
            customer_spend,
            {**row, "orders": row["orders"] - 1, "spent": row["spent"] - line["amount"]},
        )
        tx.delete(order_lines, event.aggregate_id)

    @on("auth", "UserRegistered")
    def registered(self, event: Event[UserRegistered], tx: Tx) -> None:
        row = self._row(tx, event.aggregate_id)
        tx.upsert(customer_spend, {**row, "email": event.payload.email})


def read_totals(store: sa.Engine) -> dict[str, tuple[int, int, int]]:
    """:data:`account_totals` as ``account -> (events, total, violations)``."""
    with store.connect() as conn:
        rows = conn.execute(sa.select(account_totals)).all()
    return {r.account: (r.events, r.total, r.violations) for r in rows}


def read_balances(store: sa.Engine) -> dict[str, int]:
    """:data:`balances` as ``account -> balance``."""
    with store.connect() as conn:
        return {r.account: r.balance for r in conn.execute(sa.select(balances)).all()}


def log_events(
    log: EventLog,
    events: list[tuple[str, str, dict[str, Any]]],
    source: str = "shop",
    aggregate_type: str = "order",
) -> int:
    """Write ``(aggregate id, event type, payload)`` events of ``source`` straight into an
    empty log (positions from 1); returns the head."""
    return append_events(log, events, source, aggregate_type, after=0)


def append_events(
    log: EventLog,
    events: list[tuple[str, str, dict[str, Any]]],
    source: str = "shop",
    aggregate_type: str = "order",
    *,
    after: int,
) -> int:
    """:func:`log_events` after position ``after`` (the source's head); returns the head."""
    with log.engine.begin() as conn:
        for position, (aggregate_id, event_type, payload) in enumerate(events, start=after + 1):
            conn.execute(
                event_log.insert().values(
                    source=source,
                    position=position,
                    event_id=f"{source}-{position}",
                    aggregate_type=aggregate_type,
                    aggregate_id=aggregate_id,
                    key_hash=aggregate_hash(aggregate_type, aggregate_id),
                    event_type=event_type,
                    payload=payload,
                )
            )
        head = after + len(events)
        if after:
            conn.execute(log_heads.update().where(log_heads.c.source == source).values(head=head))
        else:
            conn.execute(log_heads.insert().values(source=source, head=head))
    return head


@contextmanager
def engine_on(
    url: str, projections: Sequence[Projection], **options: Any
) -> Iterator[tuple[EventLog, SqlStore, ProjectionEngine]]:
    """``(log, store, engine)`` on one database holding the log and the read models, with
    ``projections``' tables created; ``options`` go to :class:`ProjectionEngine`."""
    log = EventLog(url)
    log.create_tables()
    store = SqlStore(url, engine=log.engine)
    store.create_tables(projections)
    engine = ProjectionEngine(LogReader(log), projections, {"default": store}, **options)
    try:
        yield log, store, engine
    finally:
        engine.close()
        log.close()


def append_tenant_events(
    log: EventLog,
    events: list[tuple[str | None, str, str, dict[str, Any]]],
    source: str = "bank",
    aggregate_type: str = "account",
) -> None:
    """Append ``(tenant, aggregate id, event type, payload)`` events of ``source`` through
    :meth:`EventLog.append`, as a relay would (aggregate type ``account`` unless told)."""
    records = [
        LogRecord(
            source_position=None,
            event_id=uuid.uuid4().hex,
            tenant=tenant,
            aggregate_type=aggregate_type,
            aggregate_id=account,
            key_hash=aggregate_hash(aggregate_type, account),
            event_type=event_type,
            payload=json.dumps(payload),
            headers=None,
            occurred_at=None,
        )
        for tenant, account, event_type, payload in events
    ]
    log.append(source, records)


def stored_failure_texts(engine: sa.Engine) -> list[str]:
    """Every value of every row of the parked-events and failures tables, as text: what a
    secret must not be found in."""
    with engine.connect() as conn:
        return [
            str(value)
            for table in (parked_events, failures)
            for row in conn.execute(sa.select(table))
            for value in row
        ]
