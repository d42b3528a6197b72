"""Ctrl-C in ``readmodel health`` and ``readmodel query`` while a read store is slow to answer
exits 130 with one line saying so: a probe cut short gives no verdict (it must not pass for
healthy, nor print a report), a query cut short read nothing. Left to typer they ended with
exit 130 and not a word. Keys typed on a real pseudo-terminal; the PostgreSQL store stalled
by a proxy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from config import load_settings
from tests.cli_helpers import balances_config, run_cli
from tests.outbox_helpers import init_outbox
from tests.stall_proxy_helpers import stall_proxy
from tests.terminal_helpers import CTRL_C, at_a_terminal


def _migrated(tmp_path: Path, store: str, source: str) -> None:
    direct = balances_config(tmp_path / "direct.toml", store, source)
    assert run_cli(["migrate", "--config", str(direct)]).exit_code == 0
    init_outbox(load_settings(direct).sources["bank"], "bank")


def _said(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_ctrl_c_while_health_reads_gives_no_verdict(
    tmp_path: Path, pg_database: Callable[[], str], sqlite_database: Callable[[], str]
) -> None:
    """The read store holds the read of the log's heads (``--timeout`` 600 s)."""
    store, source = pg_database(), sqlite_database()
    _migrated(tmp_path, store, source)
    with stall_proxy(store, b"rm_log_heads") as proxy:
        proxied = balances_config(tmp_path / "proxied.toml", proxy.url(store), source)

        stopped = at_a_terminal(
            CTRL_C,
            *["health", "--json", "--timeout", "600", "-c", str(proxied)],
            when=lambda: proxy.stalled() > 0,
            timeout=60,
        )

    assert stopped.returncode == 130, stopped
    assert "error: interrupted (Ctrl-C) while checking: no verdict" in (
        " ".join(stopped.stderr.split())
    ), stopped.stderr
    assert stopped.stdout == ""  # no document, "healthy" or not
    assert _said(stopped.stderr) == ["error: interrupted (Ctrl-C) while checking: no verdict"]


def test_ctrl_c_while_query_reads_says_nothing_was_read(
    tmp_path: Path, pg_database: Callable[[], str], sqlite_database: Callable[[], str]
) -> None:
    """The read store holds the query's SELECT of the projection's table."""
    store, source = pg_database(), sqlite_database()
    _migrated(tmp_path, store, source)
    with stall_proxy(store, b"FROM balances") as proxy:
        proxied = balances_config(tmp_path / "proxied.toml", proxy.url(store), source)

        stopped = at_a_terminal(
            CTRL_C,
            *["query", "balances", "a", "-c", str(proxied)],
            when=lambda: proxy.stalled() > 0,
            timeout=60,
        )

    assert stopped.returncode == 130, stopped
    assert "error: interrupted (Ctrl-C) while querying: nothing read" in (
        " ".join(stopped.stderr.split())
    ), stopped.stderr
    assert stopped.stdout == ""
    # one line: not the driver's on the query it cancelled ("query not terminated...")
    assert _said(stopped.stderr) == ["error: interrupted (Ctrl-C) while querying: nothing read"]
