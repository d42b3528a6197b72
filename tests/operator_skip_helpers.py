"""What the tests of replays meeting events an operator skipped (``readmodel parked skip``)
share: a live model of :mod:`tests.operator_skip_fixtures` with shop:2 skipped, on a SQL
store or a MongoDB document store, and what it holds."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from outbox.log import EventLog
from projections.document_generations import collections_at, generation_of
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.sql_store import SqlStore
from tests.cli_helpers import write_config
from tests.operator_skip_fixtures import BANK, EVENTS, LIVE, OpSkipDocs, OpSkipLedger, applied, last
from tests.projection_fixtures import append_events, engine_on

FIXTURES = "tests.operator_skip_fixtures"
LATE = [("a1", "Deposited", {"amount": 50, "poison": True}), ("a1", "Deposited", {"amount": 60})]
"""shop:6 (fails live: parked, shop:7 held behind it) and shop:7."""
WITH_LATE = sorted([*LIVE, "shop:7"])
AMOUNTS = {"a1": 60, "a2": 7, "b1": 1, "b2": 2}


def live_with_a_skip(engine: ProjectionEngine, log: EventLog, name: str) -> None:
    """Apply EVENTS (shop) and BANK live while the poison shop:2 fails: parked, shop:4 held
    behind it; the operator skips shop:2, which applies shop:4."""
    append_events(log, EVENTS, "shop", "account", after=0)
    append_events(log, BANK, "bank", "account", after=0)
    engine.catch_up(deadline=30)
    parked = engine.parked(name)
    assert [(p.source, p.position) for p in parked] == [("shop", 2), ("shop", 4)]
    assert engine.skip(parked[0]) == 1


def statuses(engine: ProjectionEngine, name: str) -> dict[str, str]:
    """``source:position`` -> the status of its parked entry, for every entry of ``name``."""
    return {f"{p.source}:{p.position}": p.status for p in engine.parked(name, status=None)}


@contextmanager
def sql_skipped(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, ...]]:
    """``(log, store, engine, projection)``: :func:`live_with_a_skip` for
    :class:`OpSkipLedger` on one database (``READMODEL_TEST_POISON`` set)."""
    monkeypatch.setenv("READMODEL_TEST_POISON", "1")
    projection = OpSkipLedger()
    with engine_on(url, [projection], max_attempts=1, batch_size=10) as (log, store, engine):
        live_with_a_skip(engine, log, projection.name)
        assert sql_rows(store) == (LIVE, {"a1": 30, "a2": 7, "b1": 1, "b2": 2})
        yield log, store, engine, projection


def sql_rows(store: SqlStore) -> tuple[list[str], dict[str, int]]:
    """The events applied (``source:position``, sorted) and the last amount per aggregate."""
    with store.engine.connect() as conn:
        events = sorted(conn.execute(sa.select(applied.c.event)).scalars())
        amounts = {r.aggregate: r.amount for r in conn.execute(sa.select(last))}
    return events, amounts


def cli_config(tmp_path: Path, url: str) -> str:
    """A configuration file of :class:`OpSkipLedger` on the store ``url``; returns its path."""
    data = {
        "store": {"url": url},
        "projections": [f"{FIXTURES}:OpSkipLedger"],
        "sources": {},
    }
    return str(write_config(tmp_path / "readmodel.toml", data))


@contextmanager
def docs_with_a_skip(
    log_url: str, mongo_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ProjectionEngine, MongoStore, OpSkipDocs]]:
    """:func:`live_with_a_skip` for :class:`OpSkipDocs` (a log in ``log_url``, the documents
    in the MongoDB database ``mongo_url``)."""
    monkeypatch.setenv("READMODEL_TEST_POISON", "1")
    log = EventLog(log_url)
    log.create_tables()
    store = MongoStore(mongo_url)
    projection = OpSkipDocs()
    store.create_tables([projection])
    engine = ProjectionEngine(LogReader(log), [projection], {"docs": store}, batch_size=10)
    engine.max_attempts = 1
    engine.retry_backoff = 0.001
    try:
        live_with_a_skip(engine, log, projection.name)
        assert doc_rows(store, projection) == (LIVE, {"a1": 30, "a2": 7, "b1": 1, "b2": 2})
        yield engine, store, projection
    finally:
        engine.close()
        store.close()
        log.close()


def doc_rows(store: MongoStore, projection: OpSkipDocs) -> tuple[list[str], dict[str, int]]:
    """:func:`sql_rows` of the current generation of :class:`OpSkipDocs`."""
    physical = collections_at(projection, generation_of(store.database, projection.name))
    events = sorted(d["_id"] for d in store.database[physical["op_skip_applied"]].find())
    amounts = {d["_id"]: d["amount"] for d in store.database[physical["op_skip_last"]].find()}
    return events, amounts


def park_late_events(
    engine: ProjectionEngine,
    log: EventLog,
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    fixed: bool = True,
) -> int:
    """LATE logged and applied live: shop:6 parked, shop:7 held behind it; then the handler
    is fixed (unless not ``fixed``: shop:6 still fails). Returns shop:6's entry id."""
    monkeypatch.setenv("READMODEL_TEST_POISON", "1")
    append_events(log, LATE, "shop", "account", after=len(EVENTS))
    engine.catch_up(deadline=30)
    if fixed:
        monkeypatch.delenv("READMODEL_TEST_POISON")
    parked = engine.parked(name)
    assert [(p.source, p.position) for p in parked] == [("shop", 6), ("shop", 7)]
    return parked[0].id


class Once:
    """Calls ``action`` the first time it is called."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action
        self.done = False

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            self.action()


@pytest.fixture
def docs_skipped(
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[ProjectionEngine, MongoStore, OpSkipDocs]]:
    """:func:`docs_with_a_skip` in a PostgreSQL log and a MongoDB database of the test's own."""
    with docs_with_a_skip(pg_database(), mongo_database(), monkeypatch) as skipped:
        yield skipped
