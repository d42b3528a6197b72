"""A long-running process whose database takes the connection and never answers (a
PostgreSQL behind a hung proxy, a MySQL/MariaDB source that never sends its greeting) gives
up the connection after a bound and says so, as it does for a database that refuses it.

Before: the read store's engines had no ``connect_timeout`` (libpq waits for ever), and
PyMySQL's bounds only the TCP connect, not the server's greeting: ``work``, ``relay``,
``sweeper`` and ``run`` sat in their start-up check without a word, for ever (neither
running nor failing, to a supervisor), and a relay's MySQL source thread hung the same way.
Now the read store's connects give up after 10 s: exit 3 with the line of a store that
refuses connections; a silent MySQL source is logged and retried like one that refuses.

The silent PostgreSQL is a proxy that forwards nothing it is sent (a real server behind it);
the silent MySQL a listener that accepts and never writes. A silent MongoDB store was bounded
already (serverSelectionTimeoutMS): tests/test_start_up_store_names.py."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from outbox.db import CONNECT_TIMEOUT, create_engine
from tests.broker_helpers import Processes, wait_until
from tests.cli_helpers import run_cli, write_config
from tests.stall_proxy_helpers import stall_proxy

SECRET = "S3cret-Silent-2207"
BOUND = CONNECT_TIMEOUT  # seconds: 10, the read store's and the sources' connect bound
COMMANDS = {"work": ["work", "-t", "1"], "relay": ["relay"], "sweeper": ["sweeper"], "run": ["run"]}


def _config(path: Path, store: str, source: str, broker: dict[str, Any]) -> Path:
    return write_config(
        path,
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": store},
            "sources": {"bank": {"url": source}},
            "broker": broker,
            "shutdown": {"grace": "30s"},  # a stop past the grace would exit 1
        },
    )


def _with_password(dsn: str) -> str:
    """``dsn`` with a password the server does not need (it trusts local users)."""
    user, _, rest = dsn.partition("@")
    return f"{user}:{SECRET}@{rest}"


def _wait(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def _log(processes: Processes, key: str) -> str:
    return (processes.logs / f"{key}.log").read_text(errors="replace")


def test_a_process_starting_on_a_silent_read_store_exits_3_naming_it(
    tmp_path: Path,
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
    processes: Processes,
) -> None:
    """``work``, ``relay``, ``sweeper`` and ``run`` (side by side) on a read store that never
    answers, its DSN without ``connect_timeout``: each exits 3 within the bound (and a
    margin), in one line naming the store by where it is, not its password."""
    store = _with_password(pg_database())
    with stall_proxy(store, b"") as proxy:  # every first message held: nothing ever answered
        broker = broker_for("redis")
        config = _config(tmp_path / "silent.toml", proxy.url(store), sqlite_database(), broker)
        keys = {
            name: processes.start(name, *args, "--config", str(config))
            for name, args in COMMANDS.items()
        }
        started = time.monotonic()
        codes = {
            name: _wait(processes.running[key], BOUND + 20 - (time.monotonic() - started))
            for name, key in keys.items()
        }
        where = f"read store at postgresql://127.0.0.1:{proxy.port}/"

    assert codes == dict.fromkeys(COMMANDS, 3), f"{codes} (None: still running)\n" + (
        processes.log_tail()
    )
    for name, key in keys.items():
        log = _log(processes, key)
        errors = [line for line in log.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and where in errors[0], (name, log)
        assert "timeout" in errors[0], (name, errors[0])
        assert SECRET not in log and "Traceback" not in log, (name, log)


def test_sigterm_while_connecting_to_a_silent_read_store_stops_at_once(
    tmp_path: Path,
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
    processes: Processes,
) -> None:
    """The bound does not delay a stop: SIGTERM while the connect waits exits 0 at once."""
    store = pg_database()
    with stall_proxy(store, b"") as proxy:
        broker = broker_for("redis")
        config = _config(tmp_path / "silent.toml", proxy.url(store), sqlite_database(), broker)
        key = processes.start("work", *COMMANDS["work"], "--config", str(config))
        assert wait_until(lambda: proxy.stalled() == 1, 30), processes.log_tail()
        processes.running[key].send_signal(signal.SIGTERM)
        code = _wait(processes.running[key], 5)

    log = _log(processes, key)
    assert code == 0, f"exit {code} (None: running 5 s after)\n{log}"
    assert "stopped while starting: no work taken yet" in log and "error:" not in log, log


@pytest.mark.parametrize("scheme", ["mysql", "mariadb"])
def test_a_relay_whose_mysql_source_never_greets_says_so_and_retries(
    scheme: str,
    tmp_path: Path,
    silent_port: int,
    sqlite_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
    processes: Processes,
) -> None:
    """``relay`` with a MySQL/MariaDB source that accepts and never sends its greeting:
    within the bound it logs the source's failure (named, password masked) and retries, as
    for a source that refuses connections; SIGTERM then stops it, exit 0."""
    source = f"{scheme}://rm:{SECRET}@127.0.0.1:{silent_port}/shop"
    config = _config(tmp_path / "readmodel.toml", sqlite_database(), source, broker_for("redis"))
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    key = processes.start("relay", "relay", "--config", str(config))

    said = wait_until(lambda: "relay step failed; retrying" in _log(processes, key), BOUND + 20)
    assert said, _log(processes, key)
    assert processes.running[key].poll() is None, _log(processes, key)
    processes.running[key].send_signal(signal.SIGTERM)
    code = _wait(processes.running[key], BOUND + 5)  # the connect in hand given up first

    log = _log(processes, key)
    assert code == 0, f"exit {code} (None: running {BOUND + 5} s after)\n{log}"
    failed = [line for line in log.splitlines() if "relay step failed" in line]
    assert "source 'bank'" in failed[0] and "timed out" in failed[0], failed[0]
    assert SECRET not in log and "Traceback" not in log, log


def test_a_mysql_query_longer_than_the_connect_bound_is_answered(
    mysql_database: Callable[[], str],
) -> None:
    """The bound on a MySQL connect's handshake (PyMySQL's ``read_timeout``) is lifted once
    connected: a query that takes longer than it is answered, not cut as a lost connection."""
    engine = create_engine(mysql_database())
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text(f"SELECT SLEEP({BOUND + 1})")).scalar() == 0
    finally:
        engine.dispose()
