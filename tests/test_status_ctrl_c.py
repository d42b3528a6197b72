"""Ctrl-C in ``readmodel status`` (a read store slow to answer) exits 130 with one line saying
so; left to typer it ended with exit 130 and not a word. (With ``--watch`` Ctrl-C is the
way to end it, exit 0: tests/test_status_watch_stop.py.) Keys typed on a real
pseudo-terminal; the store stalled by a proxy."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from config import load_settings
from tests.cli_helpers import DOC_TOTALS, balances_config, run_cli, write_config
from tests.outbox_helpers import init_outbox
from tests.stall_proxy_helpers import stall_proxy
from tests.terminal_helpers import CTRL_C, at_a_terminal


def test_ctrl_c_while_status_reads_exits_130_saying_so(
    tmp_path: Path, pg_database: Callable[[], str], sqlite_database: Callable[[], str]
) -> None:
    """The read store holds the read of the log's heads (``--timeout`` 600 s)."""
    store, source = pg_database(), sqlite_database()
    direct = balances_config(tmp_path / "direct.toml", store, source)
    assert run_cli(["migrate", "--config", str(direct)]).exit_code == 0
    init_outbox(load_settings(direct).sources["bank"], "bank")
    with stall_proxy(store, b"rm_log_heads") as proxy:
        proxied = balances_config(tmp_path / "proxied.toml", proxy.url(store), source)

        stopped = at_a_terminal(
            CTRL_C,
            *["status", "--timeout", "600", "-c", str(proxied)],
            when=lambda: proxy.stalled() > 0,
            timeout=60,
        )

    assert stopped.returncode == 130, stopped
    assert "error: interrupted (Ctrl-C) while reading the status: nothing reported" in (
        " ".join(stopped.stderr.split())
    )
    assert "Traceback" not in stopped.stderr


def test_ctrl_c_while_status_closes_its_stores_keeps_the_report_printed(
    tmp_path: Path, sqlite_database: Callable[[], str], mongo_database: Callable[[], str]
) -> None:
    """The MongoDB store's client, closing, ends its sessions on the server, which does not
    answer: the report was printed before (it was printed after the close, so lost)."""
    log, docs = sqlite_database(), mongo_database()
    data: dict[str, Any] = {
        "projections": [DOC_TOTALS],
        "store": {"url": log},
        "stores": {"docs": {"url": docs}},
    }
    direct = write_config(tmp_path / "direct.toml", data)
    assert run_cli(["migrate", "--config", str(direct)]).exit_code == 0
    with stall_proxy(docs, b"endSessions") as proxy:
        data["stores"] = {"docs": {"url": proxy.url(docs)}}
        proxied = write_config(tmp_path / "proxied.toml", data)

        stopped = at_a_terminal(
            CTRL_C,
            *["status", "--json", "-c", str(proxied)],
            when=lambda: proxy.stalled() > 0,
            timeout=60,
        )

    assert stopped.returncode == 130, stopped
    assert json.loads(stopped.stdout)["projections"], stopped.stdout
    assert "what it did stays done" in " ".join(stopped.stderr.split())
    assert "Traceback" not in stopped.stderr
