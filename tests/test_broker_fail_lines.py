"""The relay's publish and the sweep, on a broker that is down, say why in one readable
line: ``publishing to the broker failed`` with the broker's address (no user or password)
and the short reason (``connection refused``), ``sweep failed`` with the same reason, as the
consumers' ``broker unreachable`` line does (:mod:`workers.broker_log`).

Before: both logged ``error=repr(exc)``, on RabbitMQ pika's nested exceptions
(``AMQPConnectionError(AMQPConnectorSocketConnectError(ConnectionRefusedError(111, ...)))``),
on Redis redis-py's ``ConnectionError('Error 111 connecting to ...')``, no broker named."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from config import load_settings
from outbox.db import create_engine
from tests.broker_helpers import Processes, wait_until
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import init_outbox, insert_events
from workers.broker_log import describe_broker_error

SECRET = "s3cret-Fail-0911"
URLS = {
    "amqp": "amqp://user:{secret}@127.0.0.1:{port}/",
    "redis": "redis://:{secret}@127.0.0.1:{port}/0",
}
WHERE = {"amqp": "amqp://127.0.0.1:{port}/", "redis": "redis://127.0.0.1:{port}/0"}
PUBLISH, SWEEP = "publishing to the broker failed", "sweep failed"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _events(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("scheme", ["amqp", "redis"])
def test_publish_and_sweep_name_a_down_broker_readably(
    scheme: str,
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    processes: Processes,
) -> None:
    port = _closed_port()
    source_url = sqlite_database()
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": sqlite_database()},
            "sources": {"bank": {"url": source_url}},
            "broker": {"url": URLS[scheme].format(secret=SECRET, port=port), "queue": "rm_fail"},
            "engine": {"sweep_every": "1s"},
        },
    )
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    key = processes.start("run", "run", "-t", "1", "--log-json", "--config", str(config))
    log_path = processes.logs / f"{key}.log"
    source = create_engine(source_url)
    try:
        insert_events(source, [("account", "a", "Deposited", {"amount": 1})])
    finally:
        source.dispose()

    def said(event: str) -> list[dict[str, Any]]:
        return [e for e in _events(log_path) if e.get("event") == event]

    assert wait_until(lambda: said(PUBLISH) and said(SWEEP), 30), processes.log_tail()
    assert processes.stop_all()[key] == 0, processes.log_tail()
    log = log_path.read_text(errors="replace")
    assert SECRET not in log, log
    for nested in ("AMQPConnectorSocketConnectError(", "ConnectionRefusedError(", "Error("):
        assert nested not in log, log
    where = WHERE[scheme].format(port=port)
    for event in said(PUBLISH):
        assert event["broker"] == where, event
        assert event["source"] == "bank", event
        assert "connection refused" in event["error"].lower(), event
    for event in said(SWEEP):
        assert "connection refused" in event["error"].lower(), event


def test_another_error_is_a_short_line_without_the_password() -> None:
    """An error that does not say the broker is unreachable keeps its type and text, with
    any DSN password in it masked (redis-py may quote the URL it was given)."""
    error = ValueError(f"invalid URL redis://:{SECRET}@127.0.0.1:6379/x given" + "." * 500)
    line = describe_broker_error(error)
    assert line.startswith("ValueError: invalid URL redis://:***@127.0.0.1:6379/x given"), line
    assert SECRET not in line and len(line) <= 200, line


def test_a_database_error_of_the_sweep_names_no_sql_nor_parameters(
    sqlite_database: Callable[[], str],
) -> None:
    engine = create_engine(sqlite_database())
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT * FROM no_such_table WHERE x = :x"), {"x": SECRET})
    except sa.exc.SQLAlchemyError as exc:
        line = describe_broker_error(exc)
    finally:
        engine.dispose()
    assert line == "OperationalError: no such table: no_such_table", line
