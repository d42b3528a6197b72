"""The projection, events and log of tests/test_replay_batch_boundaries.py: items made from some of
their columns (the table fills the state), touched, dropped and made again, and counted with
``tx.find``; a model of what they leave; a PostgreSQL log holding them, and the ``shadow``
fixture making such logs."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import pytest
import sqlalchemy as sa

from outbox.db import libpq_conninfo
from outbox.envelope import aggregate_hash
from outbox.log import EventLog
from projections.api import Event, Projection, Tx, on
from projections.log_reader import LogReader
from projections.replay import Replayer, ReplayHooks, ReplayOptions, ReplaySummary
from projections.sql_store import SqlStore

SOURCE = "pipe"
metadata = sa.MetaData()
items = sa.Table(
    "pipe_items",
    metadata,
    sa.Column("item_id", sa.Text, primary_key=True),
    sa.Column("name", sa.String(8), nullable=False),
    sa.Column("state", sa.Text, nullable=False, server_default="fresh"),
    sa.Column("count", sa.Integer, nullable=False),
    sa.CheckConstraint("name <> 'bad'", name="pipe_items_name_not_bad"),  # the server's refusal
)
notes = sa.Table(
    "pipe_notes",
    metadata,
    sa.Column("item_id", sa.Text, primary_key=True),
    sa.Column("seen_state", sa.Text),
    sa.Column("peers", sa.Integer, nullable=False, server_default="0"),
)
Events = list[tuple[str, str, dict[str, Any]]]  # (aggregate id, event type, payload)


class TallyProjection(Projection):
    name = "pipe_tally"
    tables = (items, notes)

    @on(SOURCE, "Made")
    def made(self, event: Event[dict[str, Any]], tx: Tx) -> None:
        old = tx.get(items, event.aggregate_id)  # None again once dropped
        count = 0 if old is None else old["count"] + 100
        row = {"item_id": event.aggregate_id, "name": event.payload["name"], "count": count}
        if "state" in event.payload:
            row["state"] = event.payload["state"]
        tx.upsert(items, row)  # without a state: the table's default, or the row's own

    @on(SOURCE, "Touched")
    def touched(self, event: Event[dict[str, Any]], tx: Tx) -> None:
        row = tx.get(items, event.aggregate_id)
        if row is None:
            return
        note = tx.get(notes, event.aggregate_id) or {"peers": 0}
        tx.upsert(notes, {**note, "item_id": event.aggregate_id, "seen_state": row["state"]})
        state = "touched" if row["state"] == "fresh" else row["state"]
        tx.upsert(items, {**row, "count": row["count"] + 1, "state": state})

    @on(SOURCE, "Dropped")
    def dropped(self, event: Event[dict[str, Any]], tx: Tx) -> None:
        tx.delete(items, event.aggregate_id)

    @on(SOURCE, "Counted")
    def counted(self, event: Event[dict[str, Any]], tx: Tx) -> None:
        row = tx.get(items, event.aggregate_id)
        if row is not None:
            peers = len(tx.find(items, name=row["name"]))
            tx.upsert(notes, {"item_id": event.aggregate_id, "peers": peers})


def flips(n: int, seed: int, bad_at: int | None = None, *, overlapped: bool = False) -> Events:
    """``n`` events of ten items; with ``bad_at``, the event at that index makes an
    item ``ibad`` named ``bad``, which a CHECK constraint refuses when it is written, touched
    twice later. ``overlapped``: no handler reads the database before its batch's end (no
    ``tx.find``, rows made whole): the refused write surfaces only at its batch's flush."""
    rng = random.Random(seed)
    alive: set[str] = set()
    events: Events = []
    for index in range(n):
        if index == bad_at:
            events.append(("ibad", "Made", {"name": "bad", "state": "fresh"}))
            continue
        if bad_at is not None and index in (bad_at + 7, bad_at + 12):
            events.append(("ibad", "Touched", {}))
            continue
        item = f"i{rng.randrange(10)}"
        if item not in alive:
            made = {"name": f"n{rng.randrange(3)}"}
            events.append((item, "Made", {**made, "state": "fresh"} if overlapped else made))
            alive.add(item)
            continue
        kind = rng.choices(["Touched", "Dropped", "Counted"], [6, 2, 0 if overlapped else 3])[0]
        if kind == "Dropped":
            alive.discard(item)
        events.append((item, kind, {}))
    return events


class FailingTally(TallyProjection):
    """Fails at a ``Boom`` event after a write of its own: a ``ValueError``, or a
    ``KeyboardInterrupt`` (Ctrl-C while the handlers run) when its payload says so."""

    @on(SOURCE, "Boom")
    def boom(self, event: Event[dict[str, Any]], tx: Tx) -> None:
        tx.upsert(items, {"item_id": event.aggregate_id, "name": "boom", "count": 0})
        if event.payload.get("interrupt"):
            raise KeyboardInterrupt
        raise ValueError("boom")


def with_boom(events: Events, at: int, item: str = "i4", **payload: Any) -> Events:
    """``events`` with a ``Boom`` event of ``item`` (``payload``) inserted at index ``at``."""
    return [*events[:at], (item, "Boom", payload), *events[at:]]


class TallyModel:
    """What :class:`TallyProjection` leaves of ``events``; ``skip``: the position (or
    positions) of failing events, each skipped with every later event of its item."""

    def __init__(self, events: Events, skip: int | Collection[int] | None = None) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.notes: dict[str, dict[str, Any]] = {}
        self.skipped_positions: list[int] = []
        skips = {skip} if isinstance(skip, int) else set(skip or ())
        held: set[str] = set()
        for position, (item, kind, payload) in enumerate(events, start=1):
            if position in skips:
                held.add(item)
            if item in held:
                self.skipped_positions.append(position)
                continue
            getattr(self, kind.lower())(item, payload)

    def made(self, item: str, payload: dict[str, Any]) -> None:
        old = self.items.get(item)
        self.items[item] = {
            "item_id": item,
            "name": payload["name"],
            "state": payload.get("state", "fresh" if old is None else old["state"]),
            "count": 0 if old is None else old["count"] + 100,
        }

    def touched(self, item: str, payload: dict[str, Any]) -> None:
        row = self.items.get(item)
        if row is None:
            return
        note = self.notes.get(item, {"item_id": item, "peers": 0})
        self.notes[item] = {**note, "seen_state": row["state"]}
        row["count"] += 1
        row["state"] = "touched" if row["state"] == "fresh" else row["state"]

    def dropped(self, item: str, payload: dict[str, Any]) -> None:
        self.items.pop(item, None)

    def boom(self, item: str, payload: dict[str, Any]) -> None:
        raise AssertionError("a Boom event is skipped with its item")

    def counted(self, item: str, payload: dict[str, Any]) -> None:
        row = self.items.get(item)
        if row is None:
            return
        peers = sum(other["name"] == row["name"] for other in self.items.values())
        note = self.notes.get(item, {"item_id": item, "seen_state": None})
        self.notes[item] = {**note, "peers": peers}


@dataclass
class ShadowLog:
    """A PostgreSQL database holding ``events`` in its log, and the projection's store."""

    log: EventLog
    store: SqlStore
    reader: LogReader

    @property
    def engine(self) -> sa.Engine:
        return self.log.engine

    def close(self) -> None:
        self.log.close()


def rows(log: ShadowLog, table: sa.Table) -> dict[str, dict[str, Any]]:
    """``table``'s rows by their first column."""
    with log.engine.connect() as conn:
        return {row[0]: dict(row._mapping) for row in conn.execute(sa.select(table))}


def left_behind(log: ShadowLog) -> tuple[list[str], list[str]]:
    """The replay's threads alive, and this database's sessions idle in a transaction."""
    threads = [t.name for t in threading.enumerate() if t.name.startswith("replay")]
    with log.engine.connect() as conn:
        open_tx = conn.exec_driver_sql(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
            "AND state IN ('idle in transaction', 'idle in transaction (aborted)')"
        )
        return threads, [row[0] for row in open_tx]


def replay(
    log: ShadowLog,
    batch: int | None,
    hooks: ReplayHooks | None = None,
    *,
    read: int | None = None,
    projection: Projection | None = None,
    **options: Any,
) -> ReplaySummary:
    """A blue/green rebuild of ``projection`` (a :class:`TallyProjection` by default) from
    ``log``, in transactions of ``batch`` events read ``read`` at a time (the defaults if
    ``None``)."""
    replayer = Replayer(
        log.reader,
        projection or TallyProjection(),
        log.store,
        hooks=hooks,
        batch_size=batch,
        read_size=read,
    )
    return replayer.run(ReplayOptions(**options))


def shadow_log(dsn: str, events: Events) -> ShadowLog:
    log = EventLog(dsn)
    log.create_tables()
    store = SqlStore(dsn, engine=log.engine)
    store.create_tables([TallyProjection()])
    columns = "source, position, event_id, aggregate_type, aggregate_id, key_hash, event_type, "
    columns += "payload, occurred_at"
    with psycopg.connect(libpq_conninfo(dsn)) as conn:
        with conn.cursor().copy(f"COPY rm_event_log ({columns}) FROM STDIN") as copy:
            for position, (item, kind, payload) in enumerate(events, start=1):
                copy.write_row(
                    (
                        SOURCE,
                        position,
                        str(uuid.uuid4()),
                        "item",
                        item,
                        aggregate_hash("item", item),
                        kind,
                        orjson.dumps(payload).decode(),
                        datetime.now(UTC),
                    )
                )
        conn.execute(
            "INSERT INTO rm_log_heads (source, head) VALUES (%s, %s)", (SOURCE, len(events))
        )
    return ShadowLog(log, store, LogReader(log))


@pytest.fixture
def shadow(pg_database: Callable[[], str]) -> Iterator[Callable[[list[Any]], Any]]:
    made: list[Any] = []

    def make(events: list[Any]) -> Any:
        made.append(shadow_log(pg_database(), events))
        return made[-1]

    yield make
    for log in made:
        log.close()
