"""Invariants 4 and 6 together: in a shared outbox with a tenant column, where every tenant
numbers its orders from 1, one tenant's parked event holds that tenant's later events of the
aggregate and no other tenant's (PostgreSQL and SQLite stores, a MongoDB-wire store; live,
retried, skipped, rebuilt and replayed in place); holds from before migration 0004 keep
holding what they held."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from outbox.log import EventLog
from outbox.migrate import alembic_config, upgrade
from projections.document_generations import collections_at, generation_of
from projections.document_holds import BLOCKED, PARKED
from projections.document_replay import DocumentReplayer
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.replay import Replayer
from projections.replay_types import ReplayOptions
from projections.store import AggregateKey, ParkedEvent, is_held
from projections.store_tables import blocked
from tests.cli_helpers import run_cli, write_config
from tests.projection_fixtures import append_tenant_events, engine_on
from tests.tenant_hold_fixtures import (
    FAIL_TENANTS,
    SOURCE,
    DocTenantOrders,
    TenantOrders,
    step,
    tenant_orders,
)

Steps = dict[tuple[str, str], list[str]]

FIRST = [  # acme's step 2 (position 3) is poison while acme's handler is broken
    step("acme", "o1", 1),
    step("globex", "o1", 1),
    step("acme", "o1", 2, poison=True),
    step("globex", "o1", 2),
    step("acme", "o1", 3),
]
SECOND = [  # globex's step 3 (position 6) is poison while globex's handler is broken
    step("globex", "o1", 3, poison=True),
    step("globex", "o1", 4),
    step("acme", "o1", 4),
]


class Shop:
    """One projection's engine, its store's read model and holds, and the shared log."""

    def __init__(
        self,
        log: EventLog,
        engine: ProjectionEngine,
        projection: str,
        steps: Callable[[], Steps],
        holds: Callable[[], set[tuple[str, str]]],
    ) -> None:
        self.log = log
        self.engine = engine
        self.projection = projection
        self.steps = steps
        self.holds = holds

    def append(self, events: list[tuple[Any, ...]], apply: bool = True) -> None:
        append_tenant_events(self.log, events, source=SOURCE, aggregate_type="order")  # type: ignore[arg-type]
        if apply:
            self.engine.catch_up(deadline=30)

    def parked(self) -> list[ParkedEvent]:
        return self.engine.parked(self.projection)

    def parked_by_tenant(self) -> list[tuple[int, str]]:
        return [(p.position, p.tenant) for p in self.parked()]


@pytest.fixture(params=["postgresql", "sqlite"])
def sql_shop(request: pytest.FixtureRequest, database_for: Callable[[str], str]) -> Iterator[Shop]:
    options = {"max_attempts": 2, "retry_backoff": 0.001}
    with engine_on(database_for(request.param), [TenantOrders()], **options) as (log, _, engine):

        def steps() -> Steps:
            with log.engine.connect() as conn:
                rows = conn.execute(sa.select(tenant_orders)).all()
            return {(r.tenant, r.order_id): r.steps.split(",") for r in rows}

        def holds() -> set[tuple[str, str]]:
            with log.engine.connect() as conn:
                rows = conn.execute(sa.select(blocked.c.tenant, blocked.c.aggregate_id)).all()
            return {(tenant, aggregate) for tenant, aggregate in rows}

        yield Shop(log, engine, "tenant_orders", steps, holds)


@pytest.fixture
def doc_shop(pg_database: Callable[[], str], mongo_database: Callable[[], str]) -> Iterator[Shop]:
    log = EventLog(pg_database())
    log.create_tables()
    store = MongoStore(mongo_database())
    projection = DocTenantOrders()
    store.create_tables([projection])
    options = {"max_attempts": 2, "retry_backoff": 0.001}
    engine = ProjectionEngine(LogReader(log), [projection], {"docs": store}, **options)
    database = store.database

    def steps() -> Steps:
        physical = collections_at(projection, generation_of(database, projection.name))
        found = database[physical["doc_tenant_orders"]].find()
        return {tuple(d["_id"].split(":")): d["steps"] for d in found}  # type: ignore[misc]

    def holds() -> set[tuple[str, str]]:
        return {(d.get("tenant"), d["aggregate_id"]) for d in database[BLOCKED].find()}

    shop = Shop(log, engine, projection.name, steps, holds)
    shop.store = store  # type: ignore[attr-defined]
    yield shop
    engine.close()
    log.close()


def _each_tenant_holds_its_own_order(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAIL_TENANTS, "acme")
    shop.append(FIRST)

    assert shop.steps() == {("acme", "o1"): ["1"], ("globex", "o1"): ["1", "2"]}
    assert shop.parked_by_tenant() == [(3, "acme"), (5, "acme")]
    assert shop.holds() == {("acme", "o1")}

    monkeypatch.setenv(FAIL_TENANTS, "acme,globex")
    shop.append(SECOND)
    assert shop.steps() == {("acme", "o1"): ["1"], ("globex", "o1"): ["1", "2"]}
    assert shop.parked_by_tenant() == [
        (3, "acme"),
        (5, "acme"),
        (6, "globex"),
        (7, "globex"),
        (8, "acme"),
    ]
    assert shop.holds() == {("acme", "o1"), ("globex", "o1")}

    monkeypatch.setenv(FAIL_TENANTS, "globex")  # acme's handler is fixed
    assert shop.engine.retry(shop.parked()[0]) == 3
    assert shop.steps() == {("acme", "o1"): ["1", "2", "3", "4"], ("globex", "o1"): ["1", "2"]}
    assert shop.parked_by_tenant() == [(6, "globex"), (7, "globex")]
    assert shop.holds() == {("globex", "o1")}
    shop.append([step("acme", "o1", 5), step("globex", "o1", 5)])
    assert shop.steps()[("acme", "o1")] == ["1", "2", "3", "4", "5"]
    assert shop.parked_by_tenant() == [(6, "globex"), (7, "globex"), (10, "globex")]

    monkeypatch.delenv(FAIL_TENANTS)
    assert shop.engine.retry(shop.parked()[0]) == 3
    assert shop.steps() == {
        ("acme", "o1"): ["1", "2", "3", "4", "5"],
        ("globex", "o1"): ["1", "2", "3", "4", "5"],
    }
    assert shop.parked() == [] and shop.holds() == set()


def test_sql_one_tenants_parked_event_holds_its_own_order_only(
    sql_shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    _each_tenant_holds_its_own_order(sql_shop, monkeypatch)


def test_documents_one_tenants_parked_event_holds_its_own_order_only(
    doc_shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    _each_tenant_holds_its_own_order(doc_shop, monkeypatch)


def test_an_event_without_a_tenant_holds_its_order_in_every_tenant(
    sql_shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which tenant's order an event without a tenant is, is not known: order goes first."""
    sql_shop.append([step(None, "o1", 1), step("acme", "o1", 1), step("globex", "o2", 1)])

    assert sql_shop.steps() == {("globex", "o2"): ["1"]}
    assert sql_shop.parked_by_tenant() == [(1, ""), (2, "")]
    assert sql_shop.holds() == {("", "o1")}

    assert sql_shop.engine.skip(sql_shop.parked()[0]) == 1
    assert sql_shop.steps() == {("acme", "o1"): ["1"], ("globex", "o2"): ["1"]}
    assert sql_shop.parked() == [] and sql_shop.holds() == set()


def test_readmodel_parked_lists_the_tenant_and_releases_that_tenants_hold_only(
    sqlite_database: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sqlite_database()
    config = write_config(
        tmp_path / "readmodel.toml",
        {"store": {"url": url}, "projections": ["tests.tenant_hold_fixtures:TenantOrders"]},
    )
    c = ["--config", str(config)]
    wide = {"COLUMNS": "200"}
    monkeypatch.setenv(FAIL_TENANTS, "acme,globex")
    options = {"max_attempts": 2, "retry_backoff": 0.001}
    with engine_on(url, [TenantOrders()], **options) as (log, _, engine):
        shop = Shop(log, engine, "tenant_orders", lambda: {}, set)
        shop.append(FIRST + SECOND)

    def listed() -> list[dict[str, Any]]:
        found = run_cli(["parked", "list", "--json", *c])
        assert found.exit_code == 0, found.output
        return json.loads(found.stdout)

    entries = listed()
    assert [e["position"] for e in entries] == [3, 5, 6, 7, 8]
    assert [(e["position"], e["tenant"]) for e in entries] == [
        (3, "acme"),
        (5, "acme"),
        (6, "globex"),
        (7, "globex"),
        (8, "acme"),
    ]
    table = run_cli(["parked", "list", *c], env=wide)
    assert table.exit_code == 0, table.output
    header, *rows = [line for line in table.stdout.splitlines() if line[:1] in "┃│"]
    assert header.split("┃")[4].strip() == "tenant"
    tenants = [row.split("│")[4].strip() for row in rows]
    assert tenants == ["acme", "acme", "globex", "globex", "acme"]

    monkeypatch.setenv(FAIL_TENANTS, "globex")  # acme's handler is fixed
    retried = run_cli(["parked", "retry", entries[0]["ref"], *c])
    assert retried.exit_code == 0, retried.output
    assert "applied 3 parked event(s)" in retried.stdout
    assert [(e["position"], e["tenant"]) for e in listed()] == [(6, "globex"), (7, "globex")]

    skipped = run_cli(["parked", "skip", entries[2]["ref"], *c])
    assert skipped.exit_code == 0, skipped.output
    assert "applied 1 held event(s) of its aggregate" in skipped.stdout
    assert listed() == []
    store = sa.create_engine(url)
    with store.connect() as conn:
        rows = conn.execute(sa.select(tenant_orders).order_by(tenant_orders.c.tenant)).all()
        assert conn.execute(sa.select(sa.func.count()).select_from(blocked)).scalar() == 0
    store.dispose()
    assert [tuple(r) for r in rows] == [("acme", "o1", "1,2,3,4"), ("globex", "o1", "1,2,4")]


# -- replays -------------------------------------------------------------------------------


def _sql_replayer(shop: Shop) -> Replayer:
    engine = shop.engine
    return Replayer(
        engine.reader, engine.projection(shop.projection), engine.store_of(shop.projection)
    )


def _doc_replayer(shop: Shop) -> DocumentReplayer:
    engine = shop.engine
    projection = engine.projection(shop.projection)
    return DocumentReplayer(engine.reader, projection, shop.store, retire_after=0.0)  # type: ignore[attr-defined]


def _rebuild_skips_one_tenants_order(
    shop: Shop, replayer: Callable[[Shop], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAIL_TENANTS, "acme")
    shop.append(FIRST, apply=False)

    summary = replayer(shop).run(ReplayOptions(skip_errors=True))

    assert shop.steps() == {("acme", "o1"): ["1"], ("globex", "o1"): ["1", "2"]}
    assert [(s.position, s.tenant, s.held_behind) for s in summary.skipped] == [
        (3, "acme", None),
        (5, "acme", 3),
    ]
    assert shop.parked_by_tenant() == [(3, "acme"), (5, "acme")]
    assert shop.holds() == {("acme", "o1")}
    # Live events after the swap: globex's flow, acme's wait behind its skipped event.
    shop.append([step("globex", "o1", 3), step("acme", "o1", 4)])
    assert shop.steps() == {("acme", "o1"): ["1"], ("globex", "o1"): ["1", "2", "3"]}
    assert shop.parked_by_tenant() == [(3, "acme"), (5, "acme"), (7, "acme")]

    monkeypatch.delenv(FAIL_TENANTS)
    assert shop.engine.retry(shop.parked()[0]) == 3
    assert shop.steps() == {("acme", "o1"): ["1", "2", "3", "4"], ("globex", "o1"): ["1", "2", "3"]}


def _in_place_passes_over_one_tenants_hold(
    shop: Shop, replayer: Callable[[Shop], Any], wipe: Callable[[], None], monkeypatch: Any
) -> None:
    monkeypatch.setenv(FAIL_TENANTS, "acme")
    shop.append(FIRST)
    assert [p.position for p in shop.parked()] == [3, 5]
    wipe()

    replayer(shop).run(ReplayOptions(from_position=0))

    # An in-place replay passes over a held aggregate's events from its hold on only: acme's
    # step 1 came before the hold (applied live), so it is applied again; steps 2 and 3 not.
    assert shop.steps() == {("acme", "o1"): ["1"], ("globex", "o1"): ["1", "2"]}
    assert shop.parked_by_tenant() == [(3, "acme"), (5, "acme")]


def test_sql_rebuild_skipping_errors_parks_one_tenants_events_and_applies_the_others(
    sql_shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    _rebuild_skips_one_tenants_order(sql_shop, _sql_replayer, monkeypatch)


def test_documents_rebuild_skipping_errors_parks_one_tenants_events_and_applies_the_others(
    doc_shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    _rebuild_skips_one_tenants_order(doc_shop, _doc_replayer, monkeypatch)


def test_sql_in_place_replay_passes_over_one_tenants_hold_only(
    sql_shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    def wipe() -> None:
        with sql_shop.log.engine.begin() as conn:
            conn.execute(tenant_orders.delete())

    _in_place_passes_over_one_tenants_hold(sql_shop, _sql_replayer, wipe, monkeypatch)


def test_documents_in_place_replay_passes_over_one_tenants_hold_only(
    doc_shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = doc_shop.store.database  # type: ignore[attr-defined]

    def wipe() -> None:
        physical = collections_at(DocTenantOrders(), generation_of(database, "doc_tenant_orders"))
        database[physical["doc_tenant_orders"]].delete_many({})

    _in_place_passes_over_one_tenants_hold(doc_shop, _doc_replayer, wipe, monkeypatch)


# -- holds from before they had tenants ----------------------------------------------------


def _old_hold_keeps_holding_every_tenant(shop: Shop, make_old: Callable[[], None]) -> None:
    shop.append(FIRST[:3])  # acme's step 2 parked
    make_old()
    assert shop.parked_by_tenant() == [(3, "")]

    shop.append([step("globex", "o1", 2), step("acme", "o1", 3)])

    assert shop.steps() == {("acme", "o1"): ["1"], ("globex", "o1"): ["1"]}
    assert shop.parked_by_tenant() == [(3, ""), (4, ""), (5, "")]
    assert shop.holds() in ({("", "o1")}, {(None, "o1")})

    assert shop.engine.retry(shop.parked()[0]) == 3
    assert shop.steps() == {("acme", "o1"): ["1", "2", "3"], ("globex", "o1"): ["1", "2"]}
    assert shop.parked() == [] and shop.holds() == set()
    shop.append([step("globex", "o1", 3)])
    assert shop.steps()[("globex", "o1")] == ["1", "2", "3"]


def test_sql_holds_from_before_migration_0004_keep_holding_every_tenant_until_released(
    sql_shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows written at revision 0003 (no tenant) get ``''`` and go on holding the order of
    every tenant, in order, until retried."""
    monkeypatch.setenv(FAIL_TENANTS, "acme")

    def make_old() -> None:
        engine = sql_shop.log.engine
        with engine.begin() as conn:
            command.downgrade(alembic_config(connection=conn), "0003")
        engine.dispose()
        assert upgrade(engine).before == "0003"
        engine.dispose()
        monkeypatch.delenv(FAIL_TENANTS)

    _old_hold_keeps_holding_every_tenant(sql_shop, make_old)


def test_documents_holds_written_without_a_tenant_keep_holding_every_tenant_until_released(
    doc_shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blocked document and parked events without ``tenant`` (as written before holds had
    tenants) name no tenant: they hold the order of every tenant until retried."""
    database = doc_shop.store.database  # type: ignore[attr-defined]
    monkeypatch.setenv(FAIL_TENANTS, "acme")

    def make_old() -> None:
        (hold,) = database[BLOCKED].find()
        database[BLOCKED].delete_one({"_id": hold.pop("_id")})
        del hold["tenant"]
        old_id = f"doc_tenant_orders\x1f{SOURCE}\x1forder\x1fo1"  # projection, source, aggregate
        database[BLOCKED].insert_one({"_id": old_id, **hold})
        database[PARKED].update_many({}, {"$unset": {"tenant": ""}})
        monkeypatch.delenv(FAIL_TENANTS)

    _old_hold_keeps_holding_every_tenant(doc_shop, make_old)


def test_an_in_place_replay_holds_an_event_naming_no_tenant_from_the_earliest_hold_on() -> None:
    """An event naming no tenant may be any tenant's: an in-place replay holds it from the
    earliest of its id's tenants' holds on, and applies it again before that."""
    held = {
        AggregateKey("acme", "order", "o1"): {"since_position": 7},
        AggregateKey("globex", "order", "o1"): {"since_position": 4},
    }

    def event(tenant: str, position: int) -> SimpleNamespace:
        return SimpleNamespace(
            tenant=tenant, aggregate_type="order", aggregate_id="o1", position=position
        )

    assert [p for p in range(2, 9) if is_held(held, event("", p))] == [4, 5, 6, 7, 8]
    assert [p for p in range(2, 9) if is_held(held, event("acme", p))] == [7, 8]
    assert not is_held(held, event("initech", 8))
