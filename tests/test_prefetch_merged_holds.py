"""Events held through merged holds are not given to the projection's ``prefetch`` hook: an
event naming no tenant meets a tenant's parked event of its order id, so the holds merge into
one holding that order in every tenant, and another tenant's later event of it waits too.
Its key, one the store refuses, must not fail the batch's other events (the batch would be
applied again one event at a time). PostgreSQL and a MongoDB-wire store, live."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa
import structlog

from outbox.envelope import Envelope
from outbox.log import EventLog
from projections.api import Event, Projection, Tx, on
from projections.document_generations import collections_at, generation_of
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from tests.projection_fixtures import append_tenant_events, engine_on

metadata = sa.MetaData()
hits = sa.Table(
    "merged_hold_hits",
    metadata,
    sa.Column("tenant", sa.Text, primary_key=True),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("n", sa.Integer, nullable=False),
)
OPTIONS = {"max_attempts": 1, "retry_backoff": 0.001, "batch_size": 10}


def _check(event: Event[dict[str, Any]]) -> None:
    if event.payload.get("fail"):
        raise RuntimeError("this hit fails")


class Hits(Projection):
    name = "merged_hold_hits"
    tables = (hits,)
    tenant_column = "tenant"
    partitions = 1

    def prefetch(self, events: Sequence[Envelope], tx: Tx) -> None:
        tx.prefetch(hits, [(e.tenant, e.payload["id"]) for e in events if e.tenant])

    @on("shop", "Hit")
    def hit(self, event: Event[dict[str, Any]], tx: Tx) -> None:
        _check(event)
        row = tx.get(hits, (event.tenant, event.payload["id"]))
        tx.upsert(hits, {"id": event.payload["id"], "n": (row["n"] if row else 0) + 1})


class DocHits(Projection):
    name = "doc_merged_hold_hits"
    store = "docs"
    collections = ("doc_merged_hold_hits",)
    tenant_column = "tenant"
    partitions = 1

    def prefetch(self, events: Sequence[Envelope], tx: Tx) -> None:
        keys = [int(e.payload["id"]) for e in events if e.tenant]
        tx.prefetch("doc_merged_hold_hits", keys)  # type: ignore[arg-type]

    @on("shop", "Hit")
    def hit(self, event: Event[dict[str, Any]], tx: Any) -> None:
        _check(event)
        key = int(event.payload["id"])
        found = tx.get("doc_merged_hold_hits", key)
        tx.upsert("doc_merged_hold_hits", {"_id": key, "n": (found["n"] if found else 0) + 1})


class _Shop:
    def __init__(
        self, log: EventLog, engine: ProjectionEngine, rows: Callable[[], set[tuple[Any, ...]]]
    ) -> None:
        self.log, self.engine, self.rows = log, engine, rows
        self.name = next(iter(engine.projections))

    def append(self, events: list[tuple[Any, ...]]) -> None:
        append_tenant_events(self.log, events, source="shop", aggregate_type="order")
        self.engine.catch_up(deadline=30)

    def parked(self) -> list[tuple[int, str]]:
        return [(p.position, p.tenant) for p in self.engine.parked(self.name)]


@pytest.fixture(params=["postgresql", "mongo"])
def shop(
    request: pytest.FixtureRequest,
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
) -> Iterator[tuple[_Shop, str]]:
    if request.param == "postgresql":
        with engine_on(pg_database(), [Hits()], **OPTIONS) as (log, _, engine):

            def rows() -> set[tuple[Any, ...]]:
                with log.engine.connect() as conn:
                    return {tuple(r) for r in conn.execute(sa.select(hits))}

            yield _Shop(log, engine, rows), "abc"  # text for an integer key column
        return
    log = EventLog(pg_database())
    log.create_tables()
    store = MongoStore(mongo_database())
    projection = DocHits()
    store.create_tables([projection])
    engine = ProjectionEngine(LogReader(log), [projection], {"docs": store}, **OPTIONS)
    database = store.database

    def documents() -> set[tuple[Any, ...]]:
        physical = collections_at(projection, generation_of(database, projection.name))
        found = database[physical["doc_merged_hold_hits"]].find()
        return {(d["tenant"], d["_id"], d["n"]) for d in found}

    yield _Shop(log, engine, documents), str(2**70)  # past BSON's 64-bit integers
    engine.close()
    store.close()
    log.close()


def test_an_event_held_through_merged_holds_is_not_prefetched(
    shop: tuple[_Shop, str],
) -> None:
    made, refused_id = shop
    made.append([("acme", "o1", "Hit", {"id": 1, "fail": True})])
    assert made.parked() == [(1, "acme")]

    with structlog.testing.capture_logs() as logs:
        made.append(
            [
                (None, "o1", "Hit", {"id": 2}),  # any tenant's o1: the holds merge
                ("globex", "o1", "Hit", {"id": refused_id}),  # held behind the merged hold
                ("globex", "o2", "Hit", {"id": 4}),
            ]
        )

    assert made.parked() == [(1, ""), (2, ""), (3, "")]
    assert made.rows() == {("globex", 4, 1)}
    narrowed = [e for e in logs if "one by one" in e["event"]]
    assert narrowed == [], narrowed
