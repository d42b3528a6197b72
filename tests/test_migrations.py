"""Migrations of readmodel's own tables: empty database, previous revision, adoption of a
database from before migrations, the CLI, and the check that long-running commands make."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from outbox import schema as log_schema
from outbox.db import create_engine
from outbox.errors import SchemaError
from outbox.migrate import (
    VERSION_TABLE,
    Migration,
    current,
    head,
    known_tables,
    upgrade,
)
from projections import store_tables as store_schema
from tests.cli_helpers import run_cli, with_password, write_config

READMODEL = Path(sys.executable).with_name("readmodel")
SECRET = "Mig-Pw-0815"
BASELINE_TABLES = {
    "rm_event_log",
    "rm_log_heads",
    "rm_parked",
    "rm_checkpoints",
    "rm_blocked_aggregates",
    "rm_parked_events",
    "rm_failures",
}
HEAD_TABLES = BASELINE_TABLES | {"rm_invalidations"}


@pytest.fixture
def engine(store_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(store_url)
    yield engine
    engine.dispose()


def _tables(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def _columns(engine: sa.Engine, table: str) -> list[str]:
    with engine.connect() as conn:
        return [c["name"] for c in sa.inspect(conn).get_columns(table)]


def _version_rows(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


def _previous_release_tables(engine: sa.Engine, *, store_tables: bool = True) -> None:
    """What readmodel 0.1 did to a read store: ``create_all`` of the log tables, then of the
    store's bookkeeping tables (as the baseline revision froze them: later revisions added
    columns)."""
    log_tables = {t.name for t in log_schema.metadata.sorted_tables}
    baseline = [t for t in known_tables().values() if t.name in BASELINE_TABLES]
    log_schema.create_tables(engine, [t for t in baseline if t.name in log_tables])
    if store_tables:
        log_schema.create_tables(engine, [t for t in baseline if t.name not in log_tables])


def _log_head(engine: sa.Engine, source: str, head: int) -> None:
    with engine.begin() as conn:
        conn.execute(log_schema.log_heads.insert().values(source=source, head=head))


def _head_of(engine: sa.Engine, source: str) -> int | None:
    with engine.connect() as conn:
        query = sa.select(log_schema.log_heads.c.head).where(
            log_schema.log_heads.c.source == source
        )
        return conn.execute(query).scalar()


# -- the API ---------------------------------------------------------------------------------


def test_upgrade_empty_database_to_head(engine: sa.Engine) -> None:
    assert current(engine) is None

    result = upgrade(engine)

    assert (result.before, result.after, result.adopted) == (None, head(), False)
    assert head() == "0004"
    assert _tables(engine) == HEAD_TABLES | {VERSION_TABLE}
    models = [*log_schema.metadata.tables.values(), *store_schema.metadata.tables.values()]
    for table in models:
        assert _columns(engine, table.name) == [c.name for c in table.columns], table.name
    assert _version_rows(engine) == [head()]
    assert current(engine) == head()


def test_head_matches_the_table_models(engine: sa.Engine) -> None:
    """The revisions create exactly the tables the code declares (columns, types, nullability,
    keys, indexes): a model change without a revision fails here."""
    upgrade(engine)
    models = [log_schema.metadata, store_schema.metadata]
    ours = {t.name for m in models for t in m.tables.values()} | {VERSION_TABLE}

    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "version_table": VERSION_TABLE,
                "compare_type": True,
                "include_name": lambda name, kind, _parent: kind != "table" or name in ours,
            },
        )
        differences = compare_metadata(context, models)

    assert differences == []
    assert {t.name for m in models for t in m.tables.values()} == HEAD_TABLES


def test_upgrade_from_the_previous_revision_keeps_rows(engine: sa.Engine) -> None:
    assert upgrade(engine, "0001").after == "0001"
    assert "rm_invalidations" not in _tables(engine)
    _log_head(engine, "orders", 41)

    result = upgrade(engine, "0002")

    assert (result.before, result.after, result.adopted) == ("0001", "0002", False)
    assert _head_of(engine, "orders") == 41
    assert _version_rows(engine) == ["0002"]
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO rm_invalidations (projection, tags) VALUES ('p', '[\"a:1\"]')")
        )
        row = conn.execute(sa.text("SELECT id, tags, created_at FROM rm_invalidations")).one()
    assert row.id is not None and row.tags == '["a:1"]' and row.created_at is not None


def test_upgrade_from_0002_keeps_the_log_and_records_no_binary_ids_rule(
    engine: sa.Engine,
) -> None:
    """0003 adds ``rm_log_heads.binary_ids``: the log's rows stay, and no source gets a rule
    (a migration cannot know which rule made its events: its first relay records its own)."""
    from outbox.errors import BinaryIdsConflict
    from outbox.log_rules import adopt_rule, recorded_rules

    upgrade(engine, "0002")
    _log_head(engine, "auth", 2)
    _log_head(engine, "orders", 5)
    with engine.begin() as conn:
        conn.execute(
            log_schema.event_log.insert(),
            [
                {
                    "source": "auth",
                    "position": n,
                    "event_id": f"e{n}",
                    "aggregate_type": "user",
                    "aggregate_id": f"user-{n}",
                    "key_hash": n,
                    "event_type": "UserRegistered",
                    "payload": {"n": n},
                }
                for n in (1, 2)
            ],
        )

    result = upgrade(engine, "0003")

    assert (result.before, result.after) == ("0002", "0003")
    assert _columns(engine, "rm_log_heads") == ["source", "head", "updated_at", "binary_ids"]
    with engine.connect() as conn:
        heads = conn.execute(
            sa.text("SELECT source, head, binary_ids FROM rm_log_heads ORDER BY source")
        ).all()
        events = conn.execute(
            sa.text("SELECT position, event_id, aggregate_id FROM rm_event_log ORDER BY position")
        ).all()
    assert [tuple(row) for row in heads] == [("auth", 2, None), ("orders", 5, None)]
    assert [tuple(row) for row in events] == [(1, "e1", "user-1"), (2, "e2", "user-2")]
    assert recorded_rules(engine) == {}
    # The first relay of a source records its own setting; the next one is checked against it.
    assert adopt_rule(engine, "auth", "text") is True
    assert adopt_rule(engine, "auth", "text") is False
    with pytest.raises(BinaryIdsConflict):
        adopt_rule(engine, "auth", "uuid")
    assert recorded_rules(engine) == {"auth": "text"}


def test_upgrade_from_0003_keeps_holds_and_parked_events_naming_no_tenant(
    engine: sa.Engine,
) -> None:
    """0004 keys a hold by tenant too: holds and parked events already there are kept, with
    ``''`` (no tenant: such a hold holds its aggregate in every tenant, as it did), and two
    tenants' holds of one aggregate id can then stand side by side."""
    upgrade(engine, "0003")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO rm_blocked_aggregates (projection, source, aggregate_type, "
                "aggregate_id, since_position, reason, detail, attempts) "
                "VALUES ('orders', 'shop', 'order', '1', 3, 'boom', 'tb', 5)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO rm_parked_events (projection, source, position, event_id, "
                "aggregate_type, aggregate_id, event_type, reason, attempts) VALUES "
                "('orders', 'shop', 3, 'e3', 'order', '1', 'OrderPlaced', 'boom', 5), "
                "('orders', 'shop', 4, 'e4', 'order', '1', 'OrderPaid', 'held', 0)"
            )
        )

    result = upgrade(engine)

    assert (result.before, result.after) == ("0003", "0004")
    with engine.begin() as conn:
        holds = conn.execute(
            sa.text(
                "SELECT projection, source, tenant, aggregate_type, aggregate_id, "
                "since_position, reason, detail, attempts FROM rm_blocked_aggregates"
            )
        ).all()
        parked = conn.execute(
            sa.text("SELECT position, tenant, reason FROM rm_parked_events ORDER BY position")
        ).all()
        conn.execute(
            store_schema.blocked.insert().values(
                projection="orders",
                source="shop",
                tenant="acme",
                aggregate_type="order",
                aggregate_id="1",
                since_position=9,
                reason="acme's",
            )
        )
        keys = conn.execute(
            sa.select(store_schema.blocked.c.tenant).order_by(store_schema.blocked.c.tenant)
        ).scalars()
        assert list(keys) == ["", "acme"]
    assert [tuple(row) for row in holds] == [
        ("orders", "shop", "", "order", "1", 3, "boom", "tb", 5)
    ]
    assert [tuple(row) for row in parked] == [(3, "", "boom"), (4, "", "held")]


def test_adopts_tables_created_before_migrations(engine: sa.Engine) -> None:
    _previous_release_tables(engine)
    _log_head(engine, "orders", 7)
    assert current(engine) is None

    with structlog.testing.capture_logs() as logs:
        result = upgrade(engine)

    assert (result.before, result.after, result.adopted) == (None, head(), True)
    assert _head_of(engine, "orders") == 7
    assert _tables(engine) == HEAD_TABLES | {VERSION_TABLE}
    assert _version_rows(engine) == [head()]
    adopting = [e for e in logs if "adopting" in e["event"]]
    assert len(adopting) == 1 and adopting[0]["stamp"] == "0001"
    assert adopting[0]["tables"] == sorted(BASELINE_TABLES)


def test_adopts_a_store_that_has_only_the_log_tables(engine: sa.Engine) -> None:
    """An 0.1 read store where only ``readmodel status`` ever ran: the log tables exist, the
    store's own tables are created by the adoption."""
    _previous_release_tables(engine, store_tables=False)
    _log_head(engine, "auth", 3)

    result = upgrade(engine)

    assert result.adopted and result.after == head()
    assert _tables(engine) == HEAD_TABLES | {VERSION_TABLE}
    assert _head_of(engine, "auth") == 3


def test_refuses_to_adopt_a_table_that_is_not_readmodels(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE rm_checkpoints (name TEXT PRIMARY KEY, position INT)"))

    with pytest.raises(SchemaError) as raised:
        upgrade(engine)

    message = str(raised.value)
    assert "table rm_checkpoints" in message and "is not readmodel's" in message
    assert "missing columns ['partition', 'projection', 'source', 'updated_at']" in message
    assert "unexpected columns ['name']" in message
    assert _tables(engine) == {"rm_checkpoints"}


def test_refuses_a_revision_from_a_newer_readmodel(engine: sa.Engine) -> None:
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '0099'"))

    with pytest.raises(SchemaError, match="revision 0099, which this readmodel .* does not know"):
        upgrade(engine)


# -- the CLI ---------------------------------------------------------------------------------


def test_commands_facing_a_newer_revision_say_so_instead_of_asking_to_migrate(
    store_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    """``readmodel migrate`` cannot help with a store a newer readmodel migrated: status,
    health and ``migrate --check`` used to say "run `readmodel migrate`"."""
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '0099'"))
    config = str(_config(tmp_path, store_url))
    for command in (["status"], ["health"], ["migrate", "--check"], ["relay", "--once"]):
        result = run_cli([*command, "--config", config])
        assert result.exit_code != 0, command
        text = result.stdout + result.stderr
        assert "a newer readmodel migrated it" in text, (command, text)
        assert "run `readmodel migrate" not in text, (command, text)


def _config(tmp_path: Path, store_url: str, **other: object) -> Path:
    data: dict[str, object] = {
        "store": {"url": store_url},
        "sources": {"shop": {"url": f"sqlite:///{tmp_path / 'shop.db'}"}},
        "broker": {"url": "redis://127.0.0.1:6379/15"},
    }
    data.update(other)
    return write_config(tmp_path / "readmodel.toml", data)


def test_migrate_check_and_sql(
    store_url: str, engine: sa.Engine, sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    extra = sqlite_database()
    config = _config(tmp_path, store_url, stores={"analytics": {"url": extra}})
    hint = f"run `readmodel migrate --config {config}`"

    before = run_cli(["migrate", "--check", "--config", str(config)])
    assert before.exit_code == 1, before.output
    assert before.stderr.startswith("error: the read store default at ")  # several: named
    assert f"is at revision none, this readmodel needs {head()}: {hint}" in before.stderr

    printed = run_cli(["migrate", "--sql", "--config", str(config)])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout.count("CREATE TABLE rm_event_log (") == 2
    assert "CREATE TABLE rm_invalidations (" in printed.stdout
    assert f"CREATE TABLE {VERSION_TABLE} (" in printed.stdout
    assert ("JSONB" in printed.stdout) == store_url.startswith("postgresql")
    assert _tables(engine) == set()

    migrated = run_cli(["migrate", "--config", str(config)])
    assert migrated.exit_code == 0, migrated.output
    lines = migrated.stdout.splitlines()
    assert lines[0].startswith("default (") and lines[0].endswith(
        f"): migrated from revision none to {head()}"
    )
    assert lines[1] == f"analytics ({extra}): migrated from revision none to {head()}"
    assert current(engine) == head()

    again = run_cli(["migrate", "--config", str(config)])
    assert again.exit_code == 0, again.output
    assert again.stdout.count(f"already at revision {head()}") == 2

    after = run_cli(["migrate", "--check", "--config", str(config)])
    assert after.exit_code == 0, after.output
    assert after.stdout.count(f"at revision {head()}") == 2


def test_migrate_sql_and_check_together_is_a_usage_error(tmp_path: Path) -> None:
    config = _config(tmp_path, f"sqlite:///{tmp_path / 'rs.db'}")
    result = run_cli(["migrate", "--sql", "--check", "--config", str(config)])
    assert result.exit_code == 2
    assert "--check and --sql do not go together" in result.stderr


def test_migrate_adopts_and_says_so(store_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    _previous_release_tables(engine)
    config = _config(tmp_path, store_url)

    result = run_cli(["migrate", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(
        f"migrated from revision none to {head()} (adopted tables created without migrations)"
    )
    assert "adopting" in result.stderr


COMMANDS = [
    ["relay", "--once"],
    ["work"],
    ["sweeper"],
    ["run", "--until-caught-up"],
    ["status"],
    ["parked", "list"],
    ["metrics", "--port", "5432"],  # refused before binding; PostgreSQL holds 5432 (exit 1)
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_commands_refuse_an_unmigrated_store(
    command: list[str], pg_database: Callable[[], str], tmp_path: Path
) -> None:
    url = with_password(pg_database(), SECRET)
    config = _config(tmp_path, url)

    result = run_cli([*command, "--config", str(config)])

    assert result.exit_code == 2, result.output
    where = sa.make_url(url)  # its location only, as migrate names it: no user
    location = f"postgresql://{where.host}:{where.port}/{where.database}"
    assert result.stderr.strip() == (
        f"error: the read store at {location} is at revision none, this readmodel needs "
        f"{head()}: run `readmodel migrate --config {config}`"
    )
    assert SECRET not in result.output
    engine = create_engine(url)
    try:
        assert _tables(engine) == set()
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", [["relay", "--once"], ["work"]], ids=lambda c: c[0])
def test_commands_refuse_a_store_at_the_previous_revision(
    command: list[str], store_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    upgrade(engine, "0002")
    config = _config(tmp_path, store_url)

    result = run_cli([*command, "--config", str(config)])

    assert result.exit_code == 2, result.output
    assert f"is at revision 0002, this readmodel needs {head()}: run `readmodel migrate" in (
        result.stderr
    )
    assert current(engine) == "0002"


def test_relay_runs_once_migrated(pg_database: Callable[[], str], tmp_path: Path) -> None:
    config = _config(tmp_path, pg_database())
    assert run_cli(["outbox", "init", "--source", "shop", "--config", str(config)]).exit_code == 0
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0

    result = run_cli(["relay", "--once", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert "shop: relayed 0" in result.stdout


def test_concurrent_migrations_both_succeed(
    store_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    config = _config(tmp_path, store_url)
    command = [str(READMODEL), "migrate", "--config", str(config)]

    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    runs.append(
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    )
    outputs = [run.communicate(timeout=120) for run in runs]
    # Every line of both processes, not a repr that the summary line cuts short.
    report = "\n".join(
        f"--- process {n} exited {run.returncode}\nstdout:\n{out}stderr:\n{err}"
        for n, (run, (out, err)) in enumerate(zip(runs, outputs, strict=True), 1)
    )

    if [run.returncode for run in runs] != [0, 0]:
        pytest.fail(f"concurrent migrations did not both succeed:\n{report}")
    said = sorted(out.partition(": ")[2].strip() for out, _err in outputs)
    assert said == [
        f"already at revision {head()}",
        f"migrated from revision none to {head()}",
    ], report
    assert _version_rows(engine) == [head()]
    assert _tables(engine) == HEAD_TABLES | {VERSION_TABLE}


def test_migrate_waits_while_another_connection_holds_a_new_sqlite_files_write_lock(
    tmp_path: Path,
) -> None:
    """What a second ``readmodel migrate`` meets when the first is switching a new SQLite
    file to WAL: the write lock of a file still in rollback-journal mode. The switch then
    failed at once with "database is locked" (SQLite does not wait for the write lock of a
    statement that holds the read lock, whatever the busy timeout); it waits now."""
    path = tmp_path / "new.sqlite"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(1.0, other.commit)
    release.start()
    engine = create_engine(f"sqlite:///{path}")
    try:
        migrated = upgrade(engine)
        assert migrated == Migration(None, head())
        assert current(engine) == head()
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        release.join()
        other.close()
        engine.dispose()


def test_checks_leave_a_missing_sqlite_store_missing(tmp_path: Path) -> None:
    """Asking for the revision of a SQLite file that is not there must not create it."""
    path = tmp_path / "absent.db"
    config = str(_config(tmp_path, f"sqlite:///{path}"))

    checked = run_cli(["migrate", "--check", "--config", config])
    assert checked.exit_code == 1, checked.output
    assert f"is at revision none, this readmodel needs {head()}" in checked.stderr
    refused = run_cli(["status", "--config", config])
    assert refused.exit_code == 2 and "run `readmodel migrate" in refused.stderr
    assert not path.exists()

    assert run_cli(["migrate", "--config", config]).exit_code == 0
    assert path.exists()
    assert run_cli(["migrate", "--check", "--config", config]).exit_code == 0


def test_health_is_unhealthy_until_the_store_is_migrated(
    store_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    upgrade(engine, "0001")
    config = str(_config(tmp_path, store_url, sources={}))
    where = sa.make_url(store_url)  # its location only: no user
    location = (
        store_url
        if where.get_backend_name() == "sqlite"
        else f"postgresql://{where.host}:{where.port}/{where.database}"
    )
    problem = (
        f"the read store at {location} is at revision 0001, this readmodel needs {head()}: "
        f"run `readmodel migrate --config {config}`"
    )

    result = run_cli(["health", "--config", config])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == f"unhealthy: read store: {problem}"
    as_json = run_cli(["health", "--json", "--config", config])
    assert as_json.exit_code == 1
    document = json.loads(as_json.stdout)
    assert document["healthy"] is False
    assert document["problems"] == [{"subject": "read store", "message": problem}]

    assert run_cli(["migrate", "--config", config]).exit_code == 0
    healthy = run_cli(["health", "--config", config])
    assert healthy.exit_code == 0, healthy.output
    assert "healthy: 0 sources, 0 projections" in healthy.stdout
