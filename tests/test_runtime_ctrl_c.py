"""Ctrl-C while a command opens its runtime (a read store slow to answer) exits 130 with a
line saying that nothing changed, and while it closes it, with a line saying that what the
command did stays done: for the commands built on ``with_runtime`` and for ``readmodel
replay``. Keys typed on a real pseudo-terminal; the stores stalled by a proxy."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from config import load_settings
from outbox.db import create_engine
from tests.cli_helpers import DOC_TOTALS, balances_config, run_cli, write_config
from tests.outbox_helpers import init_outbox, insert_events
from tests.stall_proxy_helpers import stall_proxy
from tests.terminal_helpers import CTRL_C, at_a_terminal

MARKER = b"balances"  # first sent when the runtime looks for the projection's table


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
    direct = balances_config(tmp_path / "direct.toml", store, source)
    assert run_cli(["migrate", "--config", str(direct)]).exit_code == 0
    with stall_proxy(store, MARKER) as proxy:
        proxied = balances_config(tmp_path / "proxied.toml", proxy.url(store), source)

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
    ("args", "printed"),
    [(["parked", "list"], "parked"), (["replay", "doc_totals", "--dry-run"], "dry run")],
    ids=["parked-list", "replay-dry-run"],
)
def test_ctrl_c_while_the_runtime_is_closed_exits_130_saying_the_work_is_done(
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    mongo_database: Callable[[], str],
    args: list[str],
    printed: str,
) -> None:
    """The MongoDB store's client, closing, ends its sessions on the server, which does not
    answer. What the command found was printed before."""
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
    assert printed in stopped.stdout


def _parked_doc_totals(
    tmp_path: Path, log: str, docs: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """A config whose doc_totals (MongoDB store ``docs``) has account a's two deposits
    parked (the first failed, the second held behind it); the config's data."""
    data: dict[str, Any] = {
        "projections": [DOC_TOTALS],
        "store": {"url": log},
        "stores": {"docs": {"url": docs}},
        "engine": {"max_attempts": 1},
        "sources": {"bank": {"url": log}},
    }
    config = write_config(tmp_path / "direct.toml", data)
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    source = create_engine(log)
    try:
        insert_events(
            source, [("account", "a", "Deposited", {"amount": 10, "seq": s}) for s in (1, 2)]
        )
    finally:
        source.dispose()
    monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "a")
    ran = run_cli(["run", "--until-caught-up", "--config", str(config)])
    monkeypatch.delenv("READMODEL_TEST_FAIL_ON")
    assert ran.exit_code == 0, ran.output
    return data


def test_ctrl_c_while_closing_after_a_retry_still_says_what_the_retry_applied(
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    mongo_database: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``parked retry`` printed what it applied only once the stores were closed: a Ctrl-C
    while one was slow to let go lost the line, the events applied all the same."""
    docs = mongo_database()
    data = _parked_doc_totals(tmp_path, sqlite_database(), docs, monkeypatch)
    listed = run_cli(["parked", "list", "--json", "-c", str(tmp_path / "direct.toml")])
    assert listed.exit_code == 0, listed.output
    first = json.loads(listed.stdout)[0]["ref"]
    with stall_proxy(docs, b"endSessions") as proxy:
        data["stores"] = {"docs": {"url": proxy.url(docs)}}
        proxied = write_config(tmp_path / "proxied.toml", data)

        stopped = at_a_terminal(
            CTRL_C,
            *["parked", "retry", first, "-c", str(proxied)],
            when=lambda: proxy.stalled() > 0,
            timeout=60,
        )

    assert stopped.returncode == 130, stopped
    assert f"{first}: applied 2 parked event(s); the aggregate flows again" in stopped.stdout
    assert "what it did stays done" in " ".join(stopped.stderr.split())
    assert "Traceback" not in stopped.stderr
