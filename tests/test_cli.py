"""The ``readmodel`` command: outbox init, relay --once, status, exit codes, secrets, help."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer

from outbox.db import create_engine
from tests.cli_helpers import run_cli, with_password, write_config
from tests.conftest import ENGINES
from tests.outbox_helpers import insert_events
from workers.cli import app

SECRET = "S3cret-Pw-4711"
READMODEL = Path(sys.executable).with_name("readmodel")


def _no_secret(*outputs: str) -> None:
    for output in outputs:
        assert SECRET not in output


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def _split_statements(script: str) -> list[str]:
    """The statements ``outbox init --print`` printed (each ends with ';' and a blank line)."""
    return [s.strip() for s in script.split(";\n\n") if s.strip()]


def _count(url: str, table: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            t = sa.table(table)
            return int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
    finally:
        engine.dispose()


# -- help ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["relay", "status", "outbox", "parked", "demo", "version"]),
        (["relay"], ["--once", "--source", "--config"]),
        (["status"], ["--json", "--config"]),
        (["migrate"], ["--check", "--sql", "--config"]),
        (["outbox"], ["init"]),
        (["outbox", "init"], ["--source", "--print", "--config"]),
        (["parked"], ["list", "show"]),
        (["parked", "list"], ["--json", "--source", "--limit"]),
        (["parked", "show"], ["entry_id", "--config"]),
        (["demo"], ["--dir", "--users", "--orders", "--seed", "--config"]),
        (["simulate"], ["--users", "--orders", "--rate", "--seed", "--config"]),
        (["verify"], ["--json", "--limit", "--config"]),
        (["reference", "init"], ["--print", "--config"]),
        (["version"], []),
    ],
)
def test_help(args: list[str], expected: list[str]) -> None:
    result = run_cli([*args, "--help"])

    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    for word in expected:
        assert word in result.stdout


# -- outbox init -----------------------------------------------------------------------------


@pytest.mark.parametrize("engine_name", ENGINES)
def test_outbox_init_print_and_apply(
    engine_name: str, database_for: Callable[[str], str], tmp_path: Path
) -> None:
    source_url = database_for(engine_name)
    if engine_name == "postgresql":
        source_url = with_password(source_url, SECRET)
    config = write_config(
        tmp_path / "rm.toml",
        {
            "store": {"url": f"sqlite:///{tmp_path / 'store.db'}"},
            "sources": {
                "printed": {"url": source_url, "table": "printed_outbox"},
                "created": {"url": source_url, "on_dispatch": "mark"},
            },
        },
    )

    printed = run_cli(["outbox", "init", "--source", "printed", "--print", "--config", str(config)])

    assert printed.exit_code == 0, printed.output
    script = printed.stdout
    statements = _split_statements(script)
    assert statements[0].startswith("CREATE TABLE IF NOT EXISTS")
    assert "printed_outbox" in statements[0]
    for column in ("seq", "id", "aggregatetype", "aggregateid", "type", "payload", "timestamp"):
        assert column in statements[0]
    if engine_name == "postgresql":
        assert "BIGSERIAL" in script and "JSONB" in script
        assert "CREATE OR REPLACE FUNCTION readmodel_outbox_notify()" in script
        assert "pg_notify('readmodel_outbox'" in script
        assert "CREATE TRIGGER" in script and "AFTER INSERT ON" in script
    elif engine_name == "mysql":
        assert "AUTO_INCREMENT" in script and "ENGINE=InnoDB" in script
        assert "TRIGGER" not in script
    else:
        assert "AUTOINCREMENT" in script
        assert "TRIGGER" not in script
    # --print only prints.
    assert "printed_outbox" not in _tables(source_url)

    # The printed DDL is valid as printed.
    engine = create_engine(source_url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()
    assert "printed_outbox" in _tables(source_url)

    # Without --print the table is created, and running it again changes nothing.
    first = run_cli(["outbox", "init", "--source", "created", "--config", str(config)])
    assert first.exit_code == 0, first.output
    assert "created: outbox table 'outbox' is ready" in first.stdout
    engine = create_engine(source_url)
    try:
        insert_events(engine, [("order", "o1", "OrderPlaced", {"n": 1})])
        second = run_cli(["outbox", "init", "--source", "created", "--config", str(config)])
        assert second.exit_code == 0, second.output
        assert "is ready" in second.stdout
        with engine.connect() as conn:
            columns = {c["name"] for c in sa.inspect(conn).get_columns("outbox")}
            assert conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar_one() == 1
            if engine_name == "postgresql":
                triggers = conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal "
                    "AND tgrelid = 'outbox'::regclass"
                ).scalar_one()
                assert triggers == 1
    finally:
        engine.dispose()
    assert {"seq", "id", "aggregatetype", "aggregateid", "type", "payload", "dispatched_at"} <= (
        columns
    )
    _no_secret(printed.output, first.output, second.output)


def test_outbox_init_unknown_source(tmp_path: Path) -> None:
    config = write_config(tmp_path / "rm.toml", {"sources": {"orders": {"url": "sqlite:///o.db"}}})

    result = run_cli(["outbox", "init", "--source", "billing", "--config", str(config)])

    assert result.exit_code == 2
    assert "unknown source 'billing' (known: orders)" in result.stderr


# -- relay --once and status -----------------------------------------------------------------


def _status(config: Path) -> dict[str, Any]:
    result = run_cli(["status", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    _no_secret(result.output)
    statuses = json.loads(result.stdout)["sources"]
    assert len(statuses) == 1
    return statuses[0]


def test_relay_once_and_status(pg_database: Callable[[], str], tmp_path: Path) -> None:
    url = with_password(pg_database(), SECRET)  # trust auth ignores the password
    config = write_config(
        tmp_path / "rm.toml",
        {"store": {"url": url}, "sources": {"orders": {"url": url, "batch_size": 7}}},
    )
    assert run_cli(["outbox", "init", "--source", "orders", "--config", str(config)]).exit_code == 0
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    engine = create_engine(url)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    try:
        with engine.begin() as conn:
            for n in range(30):
                conn.execute(
                    sa.text(
                        "INSERT INTO outbox (aggregatetype, aggregateid, type, payload, timestamp)"
                        " VALUES ('order', :id, 'OrderPlaced', :payload, :at)"
                    ),
                    {
                        "id": f"o{n}",
                        "payload": json.dumps({"n": n}),
                        "at": an_hour_ago + timedelta(seconds=n),
                    },
                )
    finally:
        engine.dispose()

    before = _status(config)

    assert before["source"] == "orders" and before["engine"] == "postgresql"
    assert (before["undelivered"], before["log_head"], before["parked"]) == (30, 0, 0)
    assert 3590 < before["oldest_undelivered_age_seconds"] < 3700
    assert before["error"] is None
    assert ":***@" in before["url"]

    table = run_cli(["status", "--config", str(config)])
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if "orders" in line)
    assert "postgresql" in row and "30" in row and "60.0m" in row

    relayed = run_cli(["relay", "--once", "--config", str(config)])

    assert relayed.exit_code == 0, relayed.output
    assert "orders: relayed 30, duplicates 0, parked 0" in relayed.stdout
    after = _status(config)
    assert (after["undelivered"], after["log_head"], after["parked"]) == (0, 30, 0)
    assert after["oldest_undelivered_age_seconds"] is None
    assert _count(url, "rm_event_log") == 30

    again = run_cli(["relay", "--once", "--config", str(config)])
    assert again.exit_code == 0, again.output
    assert "orders: relayed 0, duplicates 0, parked 0" in again.stdout
    _no_secret(table.output, relayed.output, again.output)


def test_config_from_environment_variable(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    source = sqlite_database()
    config = write_config(
        tmp_path / "rm.toml",
        {"store": {"url": sqlite_database()}, "sources": {"local": {"url": source}}},
    )
    env = {"READMODEL_CONFIG": str(config)}
    assert run_cli(["outbox", "init", "--source", "local"], env=env).exit_code == 0
    assert run_cli(["migrate"], env=env).exit_code == 0
    engine = create_engine(source)
    try:
        insert_events(engine, [("a", "1", "Happened", {"n": n}) for n in range(3)])
    finally:
        engine.dispose()

    result = run_cli(["relay", "--once"], env=env)

    assert result.exit_code == 0, result.output
    assert "local: relayed 3, duplicates 0, parked 0" in result.stdout
    assert "READMODEL_CONFIG" not in os.environ


# -- failures and exit codes -----------------------------------------------------------------


def _unreachable_config(tmp_path: Path) -> Path:
    config = write_config(
        tmp_path / "rm.toml",
        {
            "store": {"url": f"sqlite:///{tmp_path / 'store.db'}"},
            "sources": {
                "orders": {"url": f"postgresql://alice:{SECRET}@127.0.0.1:1/orders"},
                "auth": {"url": f"mysql://bob:{SECRET}@127.0.0.1:1/auth"},
            },
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    return config


def _error_line(stderr: str, source: str) -> str:
    lines = [line for line in stderr.splitlines() if f"source '{source}'" in line]
    assert len(lines) == 1, stderr
    return lines[0]


def test_unreachable_source_exits_3_with_one_line(tmp_path: Path) -> None:
    config = _unreachable_config(tmp_path)

    relayed = run_cli(["relay", "--once", "--config", str(config)])
    status = run_cli(["status", "--config", str(config)])
    status_json = run_cli(["status", "--config", str(config), "--json"])
    init = run_cli(["outbox", "init", "--source", "orders", "--config", str(config)])
    caught_up = run_cli(["run", "--until-caught-up", "--config", str(config)])

    assert relayed.exit_code == 3
    assert caught_up.exit_code == 3 and "caught up" not in caught_up.stdout
    for result in (relayed, status, caught_up):
        orders = _error_line(result.stderr, "orders")
        assert "127.0.0.1" in orders and "refused" in orders
        assert "postgresql://alice:***@127.0.0.1:1/orders" in orders
        auth = _error_line(result.stderr, "auth")
        assert "Can't connect to MySQL server" in auth
    assert status.exit_code == 3
    assert status_json.exit_code == 3
    reported = {s["source"]: s for s in json.loads(status_json.stdout)["sources"]}
    assert reported["orders"]["undelivered"] is None
    assert "refused" in reported["orders"]["error"]
    assert reported["auth"]["url"] == "mysql://bob:***@127.0.0.1:1/auth"
    assert init.exit_code == 3
    assert init.stderr.strip().count("\n") == 0, init.stderr
    assert init.stderr.startswith(
        "error: source 'orders' (postgresql://alice:***@127.0.0.1:1/orders)"
    )
    _no_secret(
        *(r.stdout + r.stderr for r in (relayed, status, status_json, init, caught_up)),
    )


@pytest.mark.parametrize("command", [["relay", "--once"], ["parked", "list"]])
def test_unreachable_store_exits_3(command: list[str], tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "rm.toml",
        {
            "store": {"url": f"postgresql://reader:{SECRET}@127.0.0.1:1/readstore"},
            "sources": {"local": {"url": f"sqlite:///{tmp_path / 'local.db'}"}},
        },
    )

    result = run_cli([*command, "--config", str(config)])

    assert result.exit_code == 3, result.output
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "cannot read the schema revision" in result.stderr and "refused" in result.stderr
    _no_secret(result.stdout, result.stderr)


def test_unreachable_source_from_the_console_script(tmp_path: Path) -> None:
    config = _unreachable_config(tmp_path)

    result = subprocess.run(
        [str(READMODEL), "relay", "--once", "--source", "orders", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("READMODEL_")},
    )

    assert result.returncode == 3, result.stderr
    line = _error_line(result.stderr, "orders")
    assert "refused" in line
    assert "Traceback" not in result.stderr
    _no_secret(result.stdout, result.stderr)


@pytest.mark.parametrize(
    "command",
    [
        ["relay", "--once"],
        ["status"],
        ["status", "--json"],
        ["outbox", "init", "--source", "orders"],
        ["parked", "list"],
        ["parked", "show", "1"],
    ],
)
def test_bad_config_exits_2_naming_key_and_file(command: list[str], tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "broken.toml",
        {
            "store": {"url": f"mysql://reader:{SECRET}@db/readstore"},
            "sources": {"orders": {"url": "sqlite:///o.db", "batch_size": "many"}},
        },
    )

    result = run_cli([*command, "--config", str(config)])

    assert result.exit_code == 2, result.output
    assert f"{config}: sources.orders.batch_size: " in result.stderr
    assert f"{config}: store.url: " in result.stderr
    assert "Traceback" not in result.output
    _no_secret(result.stdout, result.stderr)


def test_a_password_in_the_dsn_query_is_masked(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "rm.toml",
        {
            "store": {"url": f"sqlite:///{tmp_path / 'store.db'}"},
            "sources": {
                "orders": {"url": f"postgresql://alice@127.0.0.1:1/orders?password={SECRET}"}
            },
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0

    results = [
        run_cli([*command, "--config", str(config)])
        for command in (["status"], ["status", "--json"], ["relay", "--once"])
    ]

    assert [r.exit_code for r in results] == [3, 3, 3]
    assert "postgresql://alice@127.0.0.1:1/orders?password=***" in results[0].stderr
    _no_secret(*(r.stdout + r.stderr for r in results))


def test_an_unescaped_at_sign_in_a_password_is_refused(tmp_path: Path) -> None:
    """Read as part of the host, the rest of the password would show in every message."""
    config = write_config(
        tmp_path / "rm.toml",
        {
            "store": {"url": f"sqlite:///{tmp_path / 'store.db'}"},
            "sources": {"orders": {"url": f"postgresql://alice:pw@{SECRET}@127.0.0.1:1/orders"}},
        },
    )

    result = run_cli(["status", "--config", str(config)])

    assert result.exit_code == 2, result.output
    assert f"{config}: sources.orders.url: the user or password contains '@'" in result.stderr
    _no_secret(result.stdout, result.stderr)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "config file not found: "),
        ("[sources.orders\n", "is not valid TOML"),
        ('[sources."x[/]"]\nurl = "sqlite:///x.db"\n', "source name 'x[/]'"),
        ('[sources.orders]\nurl = "sqlite:///x.db"\ncolumns.payload = "p; --"\n', "payload"),
    ],
)
def test_unusable_config_file_exits_2(content: str | None, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "rm.toml"
    if content is not None:
        path.write_text(content, encoding="utf-8")

    result = run_cli(["relay", "--once", "--config", str(path)])

    assert result.exit_code == 2, result.output
    assert str(path) in result.stderr
    assert expected in result.stderr


def test_relay_without_sources_or_with_unknown_source_exits_2(tmp_path: Path) -> None:
    empty = write_config(tmp_path / "empty.toml", {"store": {"url": "sqlite:///s.db"}})
    one = write_config(
        tmp_path / "one.toml",
        {
            "store": {"url": f"sqlite:///{tmp_path / 's.db'}"},
            "sources": {"a": {"url": "sqlite:///a.db"}},
        },
    )

    none_configured = run_cli(["relay", "--once", "--config", str(empty)])
    unknown = run_cli(["relay", "--once", "--source", "nope", "--config", str(one)])

    assert none_configured.exit_code == 2
    assert "no sources configured" in none_configured.stderr
    assert unknown.exit_code == 2
    assert "unknown source 'nope' (known: a)" in unknown.stderr


def test_version() -> None:
    result = run_cli(["version"])

    assert result.exit_code == 0
    assert result.stdout.strip() == "0.1.0"


def test_bad_options_and_unloadable_projections_exit_2(tmp_path: Path) -> None:
    store = {"url": f"sqlite:///{tmp_path / 'store.db'}"}
    config = write_config(
        tmp_path / "rm.toml", {"projections": ["no_such_package.projections"], "store": store}
    )
    plain = write_config(tmp_path / "plain.toml", {"store": store})
    assert run_cli(["migrate", "--config", str(plain)]).exit_code == 0

    unloadable = run_cli(["status", "--config", str(config)])
    level = run_cli(["relay", "--once", "--log-level", "verbose", "--config", str(plain)])
    limit = run_cli(["parked", "list", "--limit", "0", "--config", str(plain)])

    assert unloadable.exit_code == 2, unloadable.output
    assert f"{config}: projections: cannot load ['no_such_package.projections']" in (
        unloadable.stderr
    )
    assert level.exit_code == 2 and "log level 'verbose': expected debug" in level.stderr
    assert limit.exit_code == 2 and "--limit" in limit.output


def test_an_unreachable_rabbitmq_broker_is_one_line(tmp_path: Path) -> None:
    """pika logs each failed connection attempt with a traceback; status reports it once."""
    config = write_config(
        tmp_path / "rm.toml",
        {
            "store": {"url": f"sqlite:///{tmp_path / 'store.db'}"},
            "broker": {"url": f"amqp://guest:{SECRET}@127.0.0.1:1/"},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0

    result = subprocess.run(
        [str(READMODEL), "status", "--config", str(config)], capture_output=True, text=True
    )

    assert result.returncode == 3, result.stderr
    assert result.stderr.strip() == (
        "broker: broker unreachable: AMQPConnectionError: cannot connect"
    ), result.stderr
    _no_secret(result.stdout, result.stderr)


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """``(path, help text)`` of every command under ``group`` (a click group)."""
    found = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group
            found += _commands(command, (*path, name))
        else:
            found.append(((*path, name), inspect.cleandoc(command.help or "")))
    return found


def test_help_paragraphs_are_wrapped_by_the_terminal_not_by_the_docstring() -> None:
    """Each paragraph of a command's description is one run of text the terminal wraps: at
    2,000 columns it is one line (its source line breaks left a word alone on a line at 80)."""
    commands = _commands(typer.main.get_command(app))
    assert {("relay",), ("outbox", "binary-ids")} <= {path for path, _ in commands}
    for path, doc in commands:
        shown = run_cli([*path, "--help"], env={"COLUMNS": "2000"})
        assert shown.exit_code == 0, (path, shown.output)
        lines = shown.stdout.splitlines()
        for paragraph in doc.partition("\f")[0].split("\n\n"):
            words = paragraph.split()
            assert any(words[0] in line and words[-1] in line for line in lines), (path, words)
