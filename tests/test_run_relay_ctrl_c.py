"""Ctrl-C in ``run --until-caught-up`` / ``relay --once`` (which have no stop on signals)
exits 130 saying what it left; left to typer they ended with exit 130 and not a word.
Ctrl-C while ``run``, ``relay`` or ``metrics`` starts is a stop at start-up (exit 0, no
work taken); once they run, Ctrl-C is a graceful stop (exit 0: tests/test_*shutdown*). Keys
typed on a real pseudo-terminal; the PostgreSQL store stalled by a proxy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from config import load_settings
from outbox.db import create_engine
from tests.cli_helpers import balances_config, run_cli
from tests.metrics_helpers import free_port
from tests.outbox_helpers import init_outbox, insert_events
from tests.stall_proxy_helpers import stall_proxy
from tests.terminal_helpers import CTRL_C, at_a_terminal

DEPOSITS = [("account", a, "Deposited", {"amount": 5, "seq": 1}) for a in "abc"]


def _count(url: str, table: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(table):
                return 0
            return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("args", "marker", "said"),
    [
        (
            ["run", "--until-caught-up"],
            b"INSERT INTO balances",  # the first batch's write
            "error: interrupted (Ctrl-C) before catching up: what was relayed and applied so "
            "far stays done (each batch commits whole); run it again to go on",
        ),
        (
            ["relay", "--once"],
            b"INSERT INTO rm_event_log",  # the first rows' append to the log
            "error: interrupted (Ctrl-C) while relaying: the rows relayed so far stay in the "
            "log, the others stay in their outbox for the next relay (a row cut half-way is "
            "read again, logged once)",
        ),
    ],
    ids=["run-until-caught-up", "relay-once"],
)
def test_ctrl_c_exits_130_saying_what_it_left(
    tmp_path: Path,
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    args: list[str],
    marker: bytes,
    said: str,
) -> None:
    store, source = pg_database(), sqlite_database()
    direct = balances_config(tmp_path / "direct.toml", store, source)
    init_outbox(load_settings(direct).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(direct)]).exit_code == 0
    engine = create_engine(source)
    try:
        insert_events(engine, DEPOSITS)
    finally:
        engine.dispose()
    with stall_proxy(store, marker) as proxy:
        proxied = balances_config(tmp_path / "proxied.toml", proxy.url(store), source)

        stopped = at_a_terminal(
            CTRL_C, *args, "-c", str(proxied), when=lambda: proxy.stalled() > 0, timeout=60
        )

    assert stopped.returncode == 130, stopped
    assert said in " ".join(stopped.stderr.split()), stopped.stderr
    assert "Traceback" not in stopped.stderr
    if args[0] == "run":  # the driver turned the Ctrl-C into "the connection is closed":
        # not a failure of the batch to report (relay --once says each source's outcome)
        assert "apply failed" not in stopped.stderr, stopped.stderr
        assert "the connection is closed" not in stopped.stderr, stopped.stderr
    assert _count(store, "balances") == 0  # the stalled write never reached the server
    if marker == b"rm_alembic_version":
        assert _count(store, "rm_event_log") == 0


@pytest.mark.parametrize(
    "args",
    [["run"], ["relay"], ["metrics", "--timeout", "120"]],  # metrics: its check waits 120 s
    ids=["run", "relay", "metrics"],
)
def test_ctrl_c_while_it_starts_stops_it_having_taken_no_work(
    tmp_path: Path,
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    args: list[str],
) -> None:
    """Before: relay exited 130 ('interrupted while connecting'), metrics 1 at the grace."""
    if args[0] == "metrics":
        args = [*args, "--port", str(free_port())]
    store, source = pg_database(), sqlite_database()
    direct = balances_config(tmp_path / "direct.toml", store, source)
    init_outbox(load_settings(direct).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(direct)]).exit_code == 0
    with stall_proxy(store, b"rm_alembic_version") as proxy:  # the schema check
        proxied = balances_config(tmp_path / "proxied.toml", proxy.url(store), source)
        stopped = at_a_terminal(
            CTRL_C, *args, "-c", str(proxied), when=lambda: proxy.stalled() > 0, timeout=60
        )
    assert stopped.returncode == 0, stopped
    assert "stopped while starting: no work taken yet" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert _count(store, "balances") == 0
    assert _count(store, "rm_event_log") == 0
