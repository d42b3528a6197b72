"""Ctrl-C while a command opens its runtime (a read store slow to answer) exits 130 with a
line saying that nothing changed, and while it closes it, with a line saying that what the
command did stays done: for the commands built on ``with_runtime`` and for ``readmodel
replay``. Keys typed on a real pseudo-terminal; the stores stalled by a proxy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from outbox.db import create_engine
from tests.cli_helpers import DOC_TOTALS, run_cli, write_config
from tests.stall_proxy_helpers import stall_proxy
from tests.terminal_helpers import CTRL_C, at_a_terminal

MARKER = b"balances"  # first sent when the runtime looks for the projection's table


def _config(path: Path, store: str, source: str) -> Path:
    return write_config(
        path,
        {
            "projections": ["tests.projection_fixtures:Balances"],
            "store": {"url": store},
            "sources": {"bank": {"url": source}},
        },
    )


@pytest.mark.parametrize(
    "args",
    [["parked", "retry", "-p", "balances", "-y"], ["replay", "balances", "-y"]],
    ids=["parked-retry", "replay"],
)
def test_ctrl_c_while_the_runtime_is_built_exits_130_changing_nothing(
    tmp_path: Path,
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
    args: list[str],
) -> None:
    store, source = pg_database(), sqlite_database()
    direct = _config(tmp_path / "direct.toml", store, source)
    assert run_cli(["migrate", "--config", str(direct)]).exit_code == 0
    with stall_proxy(store, MARKER) as proxy:
        proxied = _config(tmp_path / "proxied.toml", proxy.url(store), source)

        stopped = at_a_terminal(
            CTRL_C, *args, "-c", str(proxied), when=lambda: proxy.stalled() > 0, timeout=60
        )

    assert stopped.returncode == 130, stopped
    assert (
        "error: interrupted (Ctrl-C) while connecting to the stores: nothing changed"
        in stopped.stderr
    )
    assert "Aborted" not in stopped.stderr and "Traceback" not in stopped.stderr
    engine = create_engine(store)
    try:
        assert not sa.inspect(engine).has_table("balances")  # not created
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "args",
    [["parked", "list"], ["replay", "doc_totals", "--dry-run"]],
    ids=["parked-list", "replay-dry-run"],
)
def test_ctrl_c_while_the_runtime_is_closed_exits_130_saying_the_work_is_done(
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    mongo_database: Callable[[], str],
    args: list[str],
) -> None:
    """The MongoDB store's client, closing, ends its sessions on the server, which does not
    answer."""
    log, docs = sqlite_database(), mongo_database()
    direct = write_config(
        tmp_path / "direct.toml",
        {"projections": [DOC_TOTALS], "store": {"url": log}, "stores": {"docs": {"url": docs}}},
    )
    assert run_cli(["migrate", "--config", str(direct)]).exit_code == 0
    with stall_proxy(docs, b"endSessions") as proxy:
        proxied = write_config(
            tmp_path / "proxied.toml",
            {
                "projections": [DOC_TOTALS],
                "store": {"url": log},
                "stores": {"docs": {"url": proxy.url(docs)}},
            },
        )

        stopped = at_a_terminal(
            CTRL_C, *args, "-c", str(proxied), when=lambda: proxy.stalled() > 0, timeout=60
        )

    assert stopped.returncode == 130, stopped
    assert (
        "error: interrupted (Ctrl-C) while closing the connections to the stores: the command "
        "had ended; what it did stays done" in " ".join(stopped.stderr.split())
    )
    assert "Aborted" not in stopped.stderr and "Traceback" not in stopped.stderr
