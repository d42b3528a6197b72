"""Ctrl-C during ``readmodel outbox binary-ids`` exits 130 saying what it left: while it
connects to the log's store (slow to answer), nothing changed; while it records the rule,
what is recorded and what is not. Left to typer it ended with exit 130 and not a word.
Keys typed on a real pseudo-terminal; the store stalled by a proxy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.binary_ids_helpers import recorded_rules_by_sql
from tests.cli_helpers import run_cli, write_config
from tests.stall_proxy_helpers import stall_proxy
from tests.terminal_helpers import CTRL_C, at_a_terminal


def _config(path: Path, store: str, source: str, rule: str) -> Path:
    return write_config(
        path, {"store": {"url": store}, "sources": {"svc": {"url": source, "binary_ids": rule}}}
    )


@pytest.fixture
def recorded(
    tmp_path: Path, pg_database: Callable[[], str], sqlite_database: Callable[[], str]
) -> tuple[str, str]:
    """A PostgreSQL log recording ``uuid`` for source svc: (the store's URL, the source's)."""
    store, source = pg_database(), sqlite_database()
    config = _config(tmp_path / "uuid.toml", store, source, "uuid")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    done = run_cli(["outbox", "binary-ids", "svc", "uuid", "-y", "-c", str(config)])
    assert done.exit_code == 0, done.output
    assert recorded_rules_by_sql(store) == {"svc": "uuid"}
    return store, source


@pytest.mark.parametrize(
    ("marker", "said"),
    [
        (
            b"rm_alembic_version",  # the schema check, before anything is read
            "error: interrupted (Ctrl-C) while connecting to the stores: nothing changed",
        ),
        (
            b"INSERT INTO rm_log_heads",  # the switch's first statement
            "error: interrupted (Ctrl-C) while recording binary_ids 'hex' for svc: not for "
            "svc (unless the Ctrl-C came at svc's commit): run the same command again to "
            "finish",
        ),
    ],
    ids=["connecting", "recording"],
)
def test_ctrl_c_exits_130_saying_what_is_recorded(
    tmp_path: Path, recorded: tuple[str, str], marker: bytes, said: str
) -> None:
    store, source = recorded
    with stall_proxy(store, marker) as proxy:
        proxied = _config(tmp_path / "hex.toml", proxy.url(store), source, "hex")

        stopped = at_a_terminal(
            CTRL_C,
            *["outbox", "binary-ids", "svc", "hex", "-y", "-c", str(proxied)],
            when=lambda: proxy.stalled() > 0,
            timeout=60,
        )

    assert stopped.returncode == 130, stopped
    assert said in " ".join(stopped.stderr.split()), stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert recorded_rules_by_sql(store) == {"svc": "uuid"}
