"""Invariants 4 and 6 where events with and without a tenant share an aggregate id: an event
naming no tenant may be any tenant's, so it waits behind every tenant's parked event of its
id, and every tenant's events wait behind it; the holds merge into one naming no tenant
(PostgreSQL and SQLite stores, a MongoDB-wire store; live, retried and rebuilt). MongoDB
holds of ids holding control characters stay apart, and a lane whose parked event is not
held stops instead of failing and parking it forever."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from outbox.errors import StoreError
from outbox.log import EventLog
from projections.document_generations import collections_at, generation_of
from projections.document_holds import BLOCKED
from projections.document_replay import DocumentReplayer
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.replay import Replayer
from projections.replay_types import ReplayOptions
from projections.store import HandlerFailed
from projections.store_tables import blocked
from tests.cli_helpers import run_cli, table_rows, write_config
from tests.projection_fixtures import append_tenant_events, engine_on
from tests.tenant_hold_fixtures import (
    FAIL_STEPS,
    SOURCE,
    ArrivalOrders,
    DocArrivalOrders,
    arrival_orders,
)

OPTIONS = {"max_attempts": 2, "retry_backoff": 0.001}


def stepped(tenant: str | None, order: str, n: int) -> tuple[Any, ...]:
    return (tenant, order, "Stepped", {"step": n})


class Shop:
    """A projection recording each order id's events (all tenants) in applied order."""

    def __init__(
        self,
        log: EventLog,
        engine: ProjectionEngine,
        steps: Callable[[], dict[str, list[str]]],
        holds: Callable[[], set[tuple[str, str, int]]],
        replayer: Callable[[], Any],
    ) -> None:
        self.log, self.engine, self.steps, self.holds = log, engine, steps, holds
        self.replayer = replayer
        self.name = next(iter(engine.projections))

    def append(self, events: list[tuple[Any, ...]], apply: bool = True) -> None:
        append_tenant_events(self.log, events, source=SOURCE, aggregate_type="order")
        if apply:
            self.engine.catch_up(deadline=30)

    def parked(self) -> list[tuple[int, str]]:
        return [(p.position, p.tenant) for p in self.engine.parked(self.name)]

    def retry_first(self) -> int:
        return self.engine.retry(self.engine.parked(self.name)[0])


@pytest.fixture(params=["postgresql", "sqlite", "mongo"])
def shop(
    request: pytest.FixtureRequest,
    database_for: Callable[[str], str],
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
) -> Iterator[Shop]:
    if request.param != "mongo":
        with engine_on(database_for(request.param), [ArrivalOrders()], **OPTIONS) as opened:
            log, store, engine = opened

            def steps() -> dict[str, list[str]]:
                with log.engine.connect() as conn:
                    rows = conn.execute(sa.select(arrival_orders)).all()
                return {r.order_id: r.steps.split(",") for r in rows}

            def holds() -> set[tuple[str, str, int]]:
                columns = (blocked.c.tenant, blocked.c.aggregate_id, blocked.c.since_position)
                with log.engine.connect() as conn:
                    return {(t, a, int(s)) for t, a, s in conn.execute(sa.select(*columns))}

            def replayer() -> Replayer:
                return Replayer(engine.reader, engine.projection("arrival_orders"), store)

            yield Shop(log, engine, steps, holds, replayer)
        return
    log = EventLog(pg_database())
    log.create_tables()
    mongo = MongoStore(mongo_database())
    projection = DocArrivalOrders()
    mongo.create_tables([projection])
    engine = ProjectionEngine(LogReader(log), [projection], {"docs": mongo}, **OPTIONS)
    database = mongo.database

    def doc_steps() -> dict[str, list[str]]:
        physical = collections_at(projection, generation_of(database, projection.name))
        return {d["_id"]: d["steps"] for d in database[physical["doc_arrival_orders"]].find()}

    def doc_holds() -> set[tuple[str, str, int]]:
        found = database[BLOCKED].find()
        return {(d["tenant"], d["aggregate_id"], d["since_position"]) for d in found}

    def doc_replayer() -> DocumentReplayer:
        return DocumentReplayer(engine.reader, projection, mongo, retire_after=0.0)

    yield Shop(log, engine, doc_steps, doc_holds, doc_replayer)
    engine.close()
    log.close()


def test_an_event_without_a_tenant_waits_behind_a_tenants_parked_event(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAIL_STEPS, "acme:2,globex:3")
    shop.append([stepped("acme", "o1", 1), stepped("acme", "o1", 2), stepped("globex", "o1", 3)])
    assert shop.holds() == {("acme", "o1", 2), ("globex", "o1", 3)}

    shop.append([stepped(None, "o1", 4), stepped("acme", "o1", 5), stepped("globex", "o2", 6)])

    assert shop.steps() == {"o1": ["acme:1"], "o2": ["globex:6"]}
    assert shop.parked() == [(2, ""), (3, ""), (4, ""), (5, "")]
    assert shop.holds() == {("", "o1", 2)}
    monkeypatch.delenv(FAIL_STEPS)
    assert shop.retry_first() == 4
    assert shop.steps()["o1"] == ["acme:1", "acme:2", "globex:3", "-:4", "acme:5"]
    assert shop.parked() == [] and shop.holds() == set()


def test_a_tenants_event_waits_behind_a_parked_event_without_a_tenant(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """acme's own hold does not let acme:4 past -:3, which may be acme's."""
    monkeypatch.setenv(FAIL_STEPS, "acme:2,-:3")
    shop.append(
        [
            stepped("acme", "o1", 1),
            stepped("acme", "o1", 2),
            stepped(None, "o1", 3),
            stepped("acme", "o1", 4),
            stepped("globex", "o1", 5),
        ]
    )

    assert shop.steps() == {"o1": ["acme:1"]}
    assert shop.parked() == [(2, ""), (3, ""), (4, ""), (5, "")]
    assert shop.holds() == {("", "o1", 2)}
    monkeypatch.setenv(FAIL_STEPS, "-:3")  # acme's handler fixed, -:3 still fails
    with pytest.raises(HandlerFailed):  # the hold's events go together, or none of them
        shop.retry_first()
    assert shop.steps() == {"o1": ["acme:1"]}
    assert shop.parked() == [(2, ""), (3, ""), (4, ""), (5, "")]
    assert shop.holds() == {("", "o1", 3)}
    monkeypatch.delenv(FAIL_STEPS)
    assert shop.retry_first() == 4
    assert shop.steps() == {"o1": ["acme:1", "acme:2", "-:3", "acme:4", "globex:5"]}
    assert shop.parked() == [] and shop.holds() == set()


def test_a_rebuild_skipping_errors_holds_events_without_a_tenant_behind_a_tenants(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAIL_STEPS, "acme:2")
    events = [stepped("acme", "o1", 1), stepped("acme", "o1", 2), stepped(None, "o1", 3)]
    shop.append([*events, stepped("acme", "o1", 4)], apply=False)

    summary = shop.replayer().run(ReplayOptions(skip_errors=True))

    assert [(s.position, s.tenant, s.held_behind) for s in summary.skipped] == [
        (2, "", None),
        (3, "", 2),
        (4, "", 2),
    ]
    assert shop.steps() == {"o1": ["acme:1"]}
    assert shop.parked() == [(2, ""), (3, ""), (4, "")]
    assert shop.holds() == {("", "o1", 2)}
    monkeypatch.delenv(FAIL_STEPS)
    assert shop.retry_first() == 3
    assert shop.steps() == {"o1": ["acme:1", "acme:2", "-:3", "acme:4"]}


@pytest.mark.parametrize("shop", ["mongo"], indirect=True)
def test_mongodb_holds_of_ids_holding_separators_stay_apart(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hold ``_id``s joined with \\x1f and \\x1e made o1\\x1eacme's hold acme's o1's."""
    monkeypatch.setenv(FAIL_STEPS, "-:1,acme:2,-:3,-:4")
    shop.append(
        [
            stepped(None, "o1\x1eacme", 1),
            stepped("acme", "o1", 2),
            stepped(None, "a\x1fb", 3),
            stepped(None, "a", 4),
        ]
    )

    assert shop.holds() == {
        ("", "o1\x1eacme", 1),
        ("acme", "o1", 2),
        ("", "a\x1fb", 3),
        ("", "a", 4),
    }
    assert sorted(shop.parked()) == [(1, ""), (2, "acme"), (3, ""), (4, "")]


@pytest.mark.parametrize("shop", ["sqlite"], indirect=True)
def test_a_lane_whose_parked_event_is_not_held_stops(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store whose hold holds nothing: the event would fail and be parked forever."""
    store = shop.engine.store_of(shop.engine.projection(shop.name))
    monkeypatch.setattr(store, "hold", lambda *args, **kwargs: None)
    monkeypatch.setenv(FAIL_STEPS, "acme:1")
    shop.append([stepped("acme", "o1", 1)], apply=False)

    started = time.monotonic()
    with pytest.raises(StoreError, match="shop:1 failed again after it was parked"):
        shop.engine.catch_up(deadline=5)
    assert time.monotonic() - started < 5


def test_readmodel_parked_lists_each_events_own_tenant_under_a_merged_hold(
    sqlite_database: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The merged hold names no tenant; each parked event's own tenant (from the log) is
    listed beside it, and the table stays readable at 80 columns."""
    url = sqlite_database()
    config = write_config(
        tmp_path / "readmodel.toml",
        {"store": {"url": url}, "projections": ["tests.tenant_hold_fixtures:ArrivalOrders"]},
    )
    c = ["--config", str(config)]
    monkeypatch.setenv(FAIL_STEPS, "acme:2,globex:3")
    with engine_on(url, [ArrivalOrders()], **OPTIONS) as (log, _, engine):
        shop = Shop(log, engine, dict, set, lambda: None)
        shop.append([stepped("acme", "o1", 1), stepped("acme", "o1", 2)])
        shop.append([stepped("globex", "o1", 3), stepped(None, "o1", 4)])

    listed = run_cli(["parked", "list", "--json", *c])
    assert listed.exit_code == 0, listed.output
    entries = json.loads(listed.stdout)
    assert [(e["position"], e["tenant"], e["event_tenant"]) for e in entries] == [
        (2, None, "acme"),
        (3, None, "globex"),
        (4, None, None),
    ]
    shown = run_cli(["parked", "show", entries[1]["ref"], *c])
    assert json.loads(shown.stdout)["event_tenant"] == "globex"

    table = run_cli(["parked", "list", *c], env={"COLUMNS": "80"})
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in table.stdout
    rows = table_rows(table.stdout)
    assert [(row["id"], row["event id"], row["projection"]) for row in rows] == [
        (e["ref"], e["event_id"], "arrival_orders") for e in entries
    ]
    assert [row["tenant"] for row in rows] == [
        "acme(hold:everytenant)",
        "globex(hold:everytenant)",
        "-",
    ]


def test_readmodel_replay_names_the_tenant_of_each_event_it_skipped(
    sqlite_database: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each skipped event's own tenant, also under a hold merged to name none."""
    url = sqlite_database()
    config = write_config(
        tmp_path / "readmodel.toml",
        {"store": {"url": url}, "projections": ["tests.tenant_hold_fixtures:ArrivalOrders"]},
    )
    monkeypatch.setenv(FAIL_STEPS, "acme:2")
    events = [stepped("acme", "o1", 1), stepped("acme", "o1", 2), stepped(None, "o1", 3)]
    with engine_on(url, [ArrivalOrders()], **OPTIONS) as (log, _, engine):
        Shop(log, engine, dict, set, lambda: None).append([*events, stepped("acme", "o1", 4)])

    replay = ["replay", "arrival_orders", "--yes", "--skip-errors", "--config", str(config)]
    result = run_cli(replay, env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.stdout.splitlines()]
    start = lines.index("skipped 3 events (now parked):")
    assert [line.split(": ", 1)[0] for line in lines[start + 1 : start + 4]] == [
        "shop:2 Stepped order:o1 (tenant acme)",
        "shop:3 Stepped order:o1",
        "shop:4 Stepped order:o1 (tenant acme)",
    ]
