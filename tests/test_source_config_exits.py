"""An outbox table that does not match its source's configuration (a mapped column missing,
a position column that is not unique) is the operator's to fix: ``relay --once`` and
``status`` exit 2 naming the source, table and column, ``status`` shows the source refused
and ``health`` says so; they exited 3, "unreachable", as for a server that cannot be reached,
which still exits 3."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from config import Settings
from outbox.db import create_engine
from outbox.relay import Relay
from tests.broker_helpers import wait_until
from tests.cli_helpers import run_cli, run_cli_process, write_config
from tests.conftest import ENGINES
from tests.tenant_fixtures import pending_rows

_SEQ = {
    "postgresql": "seq BIGSERIAL PRIMARY KEY",
    "mysql": "seq BIGINT AUTO_INCREMENT PRIMARY KEY",
    "sqlite": "seq INTEGER PRIMARY KEY AUTOINCREMENT",
}
_COMMON = "id VARCHAR(36) NOT NULL, aggregatetype VARCHAR(50) NOT NULL, aggregateid VARCHAR(50)"

MISSING_COLUMN = (
    "source 'svc': outbox table 'outbox' has no column 'type' (configured as columns.event_type)"
)
NOT_UNIQUE = (
    "position column 'created_at' of table 'outbox' (source 'svc') is not unique: rows "
    "sharing a value would be acknowledged together, some never relayed"
)


def _outbox(engine_name: str, url: str, case: str) -> None:
    if case == "missing column":
        ddl = (
            f"CREATE TABLE outbox ({_SEQ[engine_name]}, {_COMMON}, kind VARCHAR(50), payload TEXT)"
        )
        insert = "INSERT INTO outbox (id, aggregatetype, aggregateid, kind, payload) VALUES "
    else:
        columns = f"created_at BIGINT NOT NULL, {_COMMON}, type VARCHAR(50), payload TEXT"
        ddl = f"CREATE TABLE outbox ({columns})"
        insert = (
            "INSERT INTO outbox (created_at, id, aggregatetype, aggregateid, type, payload) VALUES "
        )
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(ddl)
            for n in range(3):
                stamp = f"{n // 2}, " if case != "missing column" else ""
                conn.exec_driver_sql(f"{insert}({stamp}'e{n}', 'order', 'o{n}', 'Placed', '{{}}')")
    finally:
        engine.dispose()


def _config(tmp_path: Path, store: str, source: dict[str, object]) -> Path:
    config = write_config(
        tmp_path / "rm.toml", {"store": {"url": store}, "sources": {"svc": source}}
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    return config


def _line(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize(
    ("case", "message"),
    [("missing column", MISSING_COLUMN), ("non-unique position", NOT_UNIQUE)],
    ids=["missing-column", "non-unique-position"],
)
def test_a_misconfigured_source_exits_2_naming_source_table_and_column(
    engine_name: str,
    case: str,
    message: str,
    tmp_path: Path,
    database_for: Callable[[str], str],
    sqlite_database: Callable[[], str],
) -> None:
    url = database_for(engine_name)
    _outbox(engine_name, url, case)
    source: dict[str, object] = {"url": url}
    if case == "non-unique position":
        source["columns"] = {"position": "created_at"}
    config = str(_config(tmp_path, sqlite_database(), source))

    relayed = run_cli_process("relay", "--once", "--config", config)
    status = run_cli_process("status", "--config", config)
    health = run_cli_process("health", "--config", config)

    assert relayed.returncode == 2, relayed.stderr
    assert f"svc: {message}" in _line(relayed.stderr), relayed.stderr
    assert status.returncode == 2, status.stderr
    assert f"svc: refused: {message}" in _line(status.stderr), status.stderr
    assert "(refused)" in status.stdout, status.stdout
    assert health.returncode == 1, health.stderr
    assert f"unhealthy: source svc: refused: {message}" in _line(health.stderr), health.stderr
    for result in (relayed, status, health):
        assert "Traceback" not in result.stderr
    assert pending_rows(url) == 3


def test_a_source_that_cannot_be_reached_still_exits_3(
    tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    config = str(
        _config(tmp_path, sqlite_database(), {"url": "postgresql://postgres@127.0.0.1:1/svc"})
    )

    relayed = run_cli_process("relay", "--once", "--config", config)
    status = run_cli_process("status", "--config", config)

    assert (relayed.returncode, status.returncode) == (3, 3), relayed.stderr + status.stderr
    assert "svc: source 'svc'" in relayed.stderr
    assert "(refused)" not in _line(status.stdout)


def test_a_running_relay_says_it_once_and_relays_once_the_table_is_fixed(
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    make_settings: Callable[..., Settings],
) -> None:
    """A running relay does not exit (it relays its other sources): it logs the refusal as
    an error once, not a warning per retry, and relays the rows once the column is there."""
    url = sqlite_database()
    _outbox("sqlite", url, "missing column")
    settings = make_settings(sqlite_database(), {"svc": {"url": url}})
    relay = Relay(settings)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    try:
        with capture_logs() as logs:
            thread.start()
            totals = relay.relays[0].totals
            assert wait_until(lambda: len(totals.errors) >= 3, 30), totals.errors
            engine = create_engine(url)
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql("ALTER TABLE outbox ADD COLUMN type VARCHAR(50)")
                    conn.exec_driver_sql("UPDATE outbox SET type = kind")
            finally:
                engine.dispose()
            assert wait_until(lambda: totals.relayed == 3, 30), totals
    finally:
        stop.set()
        thread.join(timeout=30)
        relay.close()

    said = [e for e in logs if e["event"].startswith("not relaying the source")]
    assert [(e["log_level"], e["error"]) for e in said[:1]] == [("error", MISSING_COLUMN)]
    assert all(e["log_level"] == "debug" for e in said[1:]) and len(said) >= 3, said
    assert not [e for e in logs if e["event"] == "relay step failed; retrying"], logs
    assert pending_rows(url) == 0
