"""An in-place replay of one tenant (``readmodel replay P --from-position N --tenant T``)
counts, in its plan (``--dry-run``), only the skipped events (``readmodel parked skip``) of
that tenant: those it would leave out. The tenant is the event's, as the log records it (an
entry's own ``tenant`` is that of the hold it was parked under, none for merged holds). On
PostgreSQL and SQLite stores, and a MongoDB document store.

Before, the plan counted the skipped entries of every tenant in the planned ranges: the dry
run of ``--tenant globex`` said an event of acme would be left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from outbox.log import EventLog
from projections.document_holds import PARKED
from projections.document_replay import DocumentReplayer
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.replay import Replayer
from projections.replay_types import ReplayOptions
from projections.store_tables import parked_events
from tests.cli_helpers import run_cli
from tests.operator_skip_fixtures import OpSkipDocs, OpSkipLedger
from tests.operator_skip_helpers import cli_config, doc_rows, sql_rows, statuses
from tests.projection_fixtures import append_tenant_events, engine_on

SHOP = [  # (tenant, aggregate id, type, payload) of source "shop", positions 1..5
    ("acme", "a1", "Deposited", {"amount": 10}),
    ("acme", "a1", "Deposited", {"amount": 20, "poison": True}),
    ("globex", "g1", "Deposited", {"amount": 1}),
    ("acme", "a1", "Deposited", {"amount": 30}),
    ("globex", "g1", "Deposited", {"amount": 2}),
]
LIVE = ["shop:1", "shop:3", "shop:4", "shop:5"]
AMOUNTS = {"a1": 30, "g1": 2}


def live_with_acme_s_skip(engine: ProjectionEngine, log: EventLog, name: str) -> None:
    """SHOP applied live: acme's poison shop:2 parked (shop:4 held behind it), then skipped."""
    append_tenant_events(log, SHOP, "shop")
    engine.catch_up(deadline=30)
    parked = engine.parked(name)
    assert [(p.source, p.position, p.tenant) for p in parked] == [
        ("shop", 2, "acme"),
        ("shop", 4, "acme"),
    ]
    assert engine.skip(parked[0]) == 1


def planned(replayer: Any, tenant: str | None, after: int = 0) -> int:
    options = ReplayOptions(from_position=after, tenant=tenant)
    return int(replayer.plan(options).skipped_by_operator)


def check_counts(replayer: Any) -> None:
    """The plans of in-place replays, by tenant (shop:2 is acme's)."""
    assert planned(replayer, "globex") == 0  # before: 1
    assert planned(replayer, "acme") == 1
    assert planned(replayer, "acme", after=2) == 0
    assert planned(replayer, None) == 1


@contextmanager
def sql_tenants(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, ...]]:
    monkeypatch.setenv("READMODEL_TEST_POISON", "1")
    projection = OpSkipLedger()
    with engine_on(url, [projection], max_attempts=1, batch_size=10) as (log, store, engine):
        live_with_acme_s_skip(engine, log, projection.name)
        assert sql_rows(store) == (LIVE, AMOUNTS)
        yield store, engine, projection


def test_the_plan_of_one_tenant_counts_only_its_skipped_events(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sql_tenants(store_url, monkeypatch) as (store, engine, projection):
        replayer = Replayer(engine.reader, projection, store)
        check_counts(replayer)
        # Parked under a hold naming no tenant (merged holds): still acme's event.
        with store.engine.begin() as conn:
            conn.execute(parked_events.update().values(tenant=""))
        check_counts(replayer)

        monkeypatch.delenv("READMODEL_TEST_POISON")
        globex = replayer.run(ReplayOptions(from_position=0, tenant="globex"))
        acme = replayer.run(ReplayOptions(from_position=0, tenant="acme"))
        assert (globex.skipped_by_operator, acme.skipped_by_operator) == (0, 1)
        assert sql_rows(store) == (LIVE, AMOUNTS)
        assert statuses(engine, projection.name)["shop:2"] == "skipped"


def test_the_dry_run_of_one_tenant_prints_only_its_skipped_events(
    database_for: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = database_for("postgresql")
    with sql_tenants(url, monkeypatch) as (_, engine, projection):
        config = cli_config(tmp_path, url)
        dry = ["replay", projection.name, "--from-position", "0", "--dry-run", "-c", config]

        globex = run_cli([*dry, "--tenant", "globex"])
        assert globex.exit_code == 0, globex.output
        assert "skipped by operator" not in globex.stdout, globex.stdout  # before: 1 event
        acme = run_cli([*dry, "--tenant", "acme"])
        assert acme.exit_code == 0, acme.output
        said = " ".join(acme.stdout.split())
        assert "1 event skipped by operator (parked skip) will be left out" in said


def test_the_document_plan_of_one_tenant_counts_only_its_skipped_events(
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("READMODEL_TEST_POISON", "1")
    log = EventLog(pg_database())
    log.create_tables()
    store = MongoStore(mongo_database())
    projection = OpSkipDocs()
    store.create_tables([projection])
    engine = ProjectionEngine(LogReader(log), [projection], {"docs": store}, batch_size=10)
    engine.max_attempts = 1
    engine.retry_backoff = 0.001
    try:
        live_with_acme_s_skip(engine, log, projection.name)
        replayer = DocumentReplayer(engine.reader, projection, store, retire_after=0.0)
        check_counts(replayer)
        store.database[PARKED].update_many({}, {"$set": {"tenant": ""}})  # merged holds
        check_counts(replayer)

        monkeypatch.delenv("READMODEL_TEST_POISON")
        globex = replayer.run(ReplayOptions(from_position=0, tenant="globex"))
        acme = replayer.run(ReplayOptions(from_position=0, tenant="acme"))
        assert (globex.skipped_by_operator, acme.skipped_by_operator) == (0, 1)
        assert doc_rows(store, projection) == (LIVE, AMOUNTS)
    finally:
        engine.close()
        store.close()
        log.close()
