"""With several read stores configured, a line a command says at run time about one store
names it as the start-up lines do (tests/test_start_up_store_names.py): ``read store NAME at
LOCATION``, without the password. A lone ``[store]`` keeps its unnamed lines.

Before: ``parked list`` and ``parked show`` beside an unreachable MongoDB store ``docs``
said ``error: cannot read rm_parked_events: ServerSelectionTimeoutError: ...`` (which store
of several?), ``replay --dry-run`` ``error: conversation_inbox: cannot read the collections:
...``, and a dry run's plan did not say which store the projection is rebuilt in; a worker's
``apply failed; will retry`` gave only ``totals: apply failed: ...``, its ``sweep failed``
only ``cannot read rm_checkpoints: ...``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from config import load_settings
from outbox.db import create_engine
from outbox.errors import EventLogError, StoreError
from projections.mongo_store import MongoStore
from projections.store_names import naming
from tests.broker_helpers import Processes, wait_until
from tests.cli_helpers import DOC_TOTALS, run_cli, unreachable_docs_config, write_config
from tests.outbox_helpers import init_outbox, insert_events
from tests.stall_proxy_helpers import CutProxy

SECRET = "S3cret-RunTime-9031"
CLOSED = "mongodb://127.0.0.1:1/readmodels"  # nothing listens: refused at once
REFUSED = "ServerSelectionTimeoutError: 127.0.0.1:1: [Errno 111] Connection refused"


@pytest.fixture
def unreachable_docs(tmp_path: Path, sqlite_database: Callable[[], str]) -> Path:
    """The chat reference projection in a MongoDB store ``docs`` on a closed port, beside
    the (migrated) SQLite ``[store]``."""
    return unreachable_docs_config(tmp_path / "readmodel.toml", sqlite_database, SECRET)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["parked", "list"], "cannot read rm_parked_events"),
        (["parked", "list", "--projection", "conversation_inbox"], "cannot read rm_parked_events"),
        (["parked", "show", "e1"], "cannot read rm_parked_events"),
        (
            ["parked", "purge", "--projection", "conversation_inbox", "--yes"],
            "cannot read rm_parked_events",
        ),
        (["replay", "conversation_inbox", "--dry-run"], "conversation_inbox: cannot read the "),
        (["query", "conversation_inbox"], "cannot read conversation_inbox: "),
    ],
    ids=[
        "parked-list",
        "parked-list-projection",
        "parked-show",
        "parked-purge",
        "replay-dry-run",
        "query",
    ],
)
def test_an_unreachable_mongodb_store_among_several_is_named_at_run_time(
    command: list[str], said: str, unreachable_docs: Path
) -> None:
    """Exit 3 in one line naming ``docs`` and where it is, then what could not be done."""
    result = run_cli([*command, "--config", str(unreachable_docs)])

    assert result.exit_code == 3, result.output
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: read store docs at {CLOSED}: {said}"), lines[0]
    assert REFUSED in lines[0], lines[0]
    assert SECRET not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def _two_stores(tmp_path: Path, sqlite_database: Callable[[], str], docs: str) -> Path:
    """``totals`` in the SQLite ``[store]`` and ``doc_totals`` in MongoDB ``docs``, migrated."""
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals", DOC_TOTALS],
            "store": {"url": sqlite_database()},
            "stores": {"docs": {"url": docs}},
            "sources": {"bank": {"url": sqlite_database()}},
        },
    )
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    return config


def _first_line(config: Path, projection: str) -> str:
    result = run_cli(["replay", projection, "--dry-run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "dry run: nothing was changed", result.stdout
    return result.stdout.splitlines()[0]


def test_a_dry_run_names_the_store_the_projection_is_in(
    tmp_path: Path, sqlite_database: Callable[[], str], mongo_database: Callable[[], str]
) -> None:
    """The plan's first line says in which store the projection is rebuilt: ``docs`` (a
    MongoDB database, its location without the query) or ``default``."""
    docs = mongo_database()
    server, _, rest = docs.removeprefix("mongodb://").partition("/")
    config = _two_stores(tmp_path, sqlite_database, docs)  # the test server takes no password
    default = load_settings(config).store.url

    assert _first_line(config, "doc_totals") == (
        "doc_totals: blue/green rebuild into shadow collections in the read store docs at "
        f"mongodb://{server}/{rest.partition('?')[0]}"
    )
    assert _first_line(config, "totals") == (
        f"totals: blue/green rebuild into shadow tables in the read store default at {default}"
    )


def test_a_dry_run_with_one_store_keeps_its_line(
    tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    data: dict[str, Any] = {
        "projections": ["tests.projection_fixtures:Totals"],
        "store": {"url": sqlite_database()},
        "sources": {"bank": {"url": sqlite_database()}},
    }
    config = write_config(tmp_path / "readmodel.toml", data)
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0

    assert _first_line(config, "totals") == "totals: blue/green rebuild into shadow tables"


@pytest.mark.parametrize("several", [True, False], ids=["two-stores", "one-store"])
def test_a_worker_names_the_store_that_fails_an_apply(
    several: bool,
    tmp_path: Path,
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
    processes: Processes,
) -> None:
    """``work`` beside a second store ``reports``: the PostgreSQL ``[store]`` loses its
    checkpoints table once the worker runs; the warning of each failed apply names
    ``default`` and where it is, without the password; alone, the store is not named."""
    store = pg_database()
    user, _, rest = store.partition("@")
    source = sqlite_database()
    data: dict[str, Any] = {
        "projections": ["tests.projection_fixtures:Totals"],
        "store": {"url": f"{user}:{SECRET}@{rest}"},  # the server trusts local users
        "sources": {"bank": {"url": source}},
        "broker": broker_for("redis"),
    }
    if several:
        data["stores"] = {"reports": {"url": sqlite_database()}}
    config = write_config(tmp_path / "readmodel.toml", data)
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    key = processes.start("work", "work", "-t", "1", "--config", str(config))
    assert wait_until(lambda: processes.worker_started(key), 30), processes.log_tail()
    engine = create_engine(store)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE rm_checkpoints")
    finally:
        engine.dispose()
    source_engine = create_engine(source)
    try:
        insert_events(source_engine, [("account", "a", "Deposited", {"amount": 5, "seq": 1})])
    finally:
        source_engine.dispose()

    assert run_cli(["relay", "--once", "--config", str(config)]).exit_code == 0
    log = processes.logs / f"{key}.log"
    assert wait_until(lambda: "apply failed; will retry" in log.read_text(), 30), log.read_text()

    failed = next(line for line in log.read_text().splitlines() if "apply failed" in line)
    where = f"read store default at postgresql://{rest.partition('?')[0]}: " if several else ""
    assert f"error='{where}totals: apply failed: UndefinedTable: " in failed, failed
    assert SECRET not in log.read_text()


def test_a_worker_names_the_store_its_sweep_cannot_read(
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    mongo_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
    processes: Processes,
) -> None:
    """``work`` with ``doc_totals`` in MongoDB ``docs``, reached through a proxy that is cut
    once the worker runs: its ``sweep failed`` warning names ``docs`` and where it is."""
    mongo = mongo_database()
    host, port = mongo.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    proxy = CutProxy((host, int(port)))
    try:
        proxied = mongo.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
        config = write_config(
            tmp_path / "readmodel.toml",
            {
                "projections": [DOC_TOTALS],
                "store": {"url": sqlite_database()},
                "stores": {
                    "docs": {"url": proxied + "&serverSelectionTimeoutMS=500&connectTimeoutMS=500"}
                },
                "engine": {"sweep_every": "200ms"},
                "sources": {"bank": {"url": sqlite_database()}},
                "broker": broker_for("redis"),
            },
        )
        init_outbox(load_settings(config).sources["bank"], "bank")
        assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
        key = processes.start("work", "work", "-t", "1", "--config", str(config))
        assert wait_until(lambda: processes.worker_started(key), 30), processes.log_tail()
        proxy.cut()
        log = processes.logs / f"{key}.log"
        assert wait_until(lambda: "sweep failed" in log.read_text(), 30), log.read_text()
    finally:
        proxy.close()

    failed = next(line for line in log.read_text().splitlines() if "sweep failed" in line)
    where = f"read store docs at {proxied.partition('?')[0]}"
    assert f"{where}: cannot read rm_checkpoints: " in failed, failed


def test_status_names_a_store_that_answers_but_fails_with_where_it_is(
    tmp_path: Path, pg_database: Callable[[], str], sqlite_database: Callable[[], str]
) -> None:
    """A PostgreSQL store ``archive`` that lost its checkpoints table: ``status`` exits 1
    naming it by name and location, as it names an unreachable one (before: by name only,
    ``error: read store archive: UndefinedTable: ...``)."""
    archive = pg_database()
    user, _, rest = archive.partition("@")
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.rebuild_name_fixtures:ArchivedElsewhere"],
            "store": {"url": sqlite_database()},
            "stores": {"archive": {"url": f"{user}:{SECRET}@{rest}"}},
            "sources": {"bank": {"url": sqlite_database()}},
        },
    )
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    engine = create_engine(archive)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE rm_checkpoints")
    finally:
        engine.dispose()

    result = run_cli(["status", "--config", str(config)])

    assert result.exit_code == 1, result.output
    lines = _error_lines(result.stderr)
    where = f"read store archive at postgresql://{rest.partition('?')[0]}"
    assert lines == [
        f'error: {where}: UndefinedTable: relation "rm_checkpoints" does not exist (SQLSTATE 42P01)'
    ], result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_an_event_log_error_is_not_said_of_the_projections_store() -> None:
    """A replay reads the log (in ``[store]``) inside the naming of its projection's store:
    the log's error keeps its own words, the store's gets the store's name."""
    store = MongoStore(f"mongodb://rm:{SECRET}@127.0.0.1:1/readmodels", label="docs")
    lone = MongoStore(CLOSED)  # no label: the only store
    try:
        with pytest.raises(EventLogError) as log_error, naming(store):
            raise EventLogError("reading the event log failed: OperationalError: gone")
        with pytest.raises(StoreError) as store_error, naming(store):
            raise StoreError("cannot read rm_checkpoints: gone")
        with pytest.raises(StoreError) as alone, naming(lone):
            raise StoreError("cannot read rm_checkpoints: gone")
    finally:
        store.close()
        lone.close()

    assert str(log_error.value) == "reading the event log failed: OperationalError: gone"
    assert (
        str(store_error.value) == f"read store docs at {CLOSED}: cannot read rm_checkpoints: gone"
    )
    assert str(alone.value) == "cannot read rm_checkpoints: gone"
