"""The question ``readmodel replay`` and ``readmodel outbox binary-ids`` ask at a terminal is
the one of the bulk parked commands: Ctrl-C there exits 130 and the end of input (Ctrl-D)
exits 1, each saying that nothing changed (click's prompt said "Aborted." and exited 1 for
both). ``--yes`` does not ask; without it and without a terminal each refuses (exit 2)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from config import load_settings
from outbox.db import create_engine
from tests.binary_ids_helpers import recorded_rules_by_sql
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import init_outbox, insert_events
from tests.terminal_helpers import CTRL_C, CTRL_D, at_a_terminal

ASKED = "[y/N]"


@pytest.fixture
def bank(tmp_path: Path, sqlite_database: Callable[[], str]) -> Path:
    """``balances`` on SQLite, caught up with three deposits of a bank source."""
    data = {
        "projections": ["tests.projection_fixtures:Balances"],
        "store": {"url": sqlite_database()},
        "sources": {"bank": {"url": sqlite_database()}},
    }
    path = write_config(tmp_path / "readmodel.toml", data)
    init_outbox(load_settings(path).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(path)]).exit_code == 0
    source = create_engine(data["sources"]["bank"]["url"])
    insert_events(
        source, [("account", a, "Deposited", {"amount": 5, "seq": 1}) for a in ("x", "y", "z")]
    )
    source.dispose()
    assert run_cli(["run", "--until-caught-up", "--config", str(path)]).exit_code == 0
    return path


def _tables(config: Path) -> list[str]:
    engine = create_engine(load_settings(config).store.url)
    try:
        return sorted(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("keys", "code", "said"),
    [
        (CTRL_C, 130, "error: interrupted (Ctrl-C) at the question: nothing changed"),
        (CTRL_D, 1, "error: no answer (end of input): nothing changed"),
        (b"n\n", 1, "error: replay cancelled: nothing changed"),
    ],
    ids=["ctrl-c", "ctrl-d", "no"],
)
def test_the_replay_question_changes_nothing(bank: Path, keys: bytes, code: int, said: str) -> None:
    tables = _tables(bank)

    answered = at_a_terminal(keys, "replay", "balances", "-c", str(bank), timeout=60)

    assert answered.returncode == code, answered
    assert "rebuild balances from 3 events? [y/N]" in answered.stderr
    assert said in answered.stderr
    assert "Aborted" not in answered.stderr and "Traceback" not in answered.stderr
    assert "rebuilt and swapped in" not in answered.stdout
    assert _tables(bank) == tables  # no shadow table was made


def test_the_replay_goes_on_at_yes_and_refuses_without_a_terminal(bank: Path) -> None:
    unasked = run_cli(["replay", "balances", "-c", str(bank)])  # stdin: not a terminal
    done = at_a_terminal(b"y\n", "replay", "balances", "-c", str(bank), timeout=60)
    again = run_cli(["replay", "balances", "--yes", "-c", str(bank)])

    assert unasked.exit_code == 2
    assert "refusing to replay without confirmation: pass --yes" in unasked.stderr
    assert done.returncode == 0, done
    assert "balances: rebuilt and swapped in: 3 events" in done.stdout
    assert again.exit_code == 0, again.output
    assert "rebuilt and swapped in" in again.stdout


@pytest.fixture
def switched(tmp_path: Path, sqlite_database: Callable[[], str]) -> tuple[Path, str]:
    """A config saying ``binary_ids = "hex"`` for source svc, whose log records ``uuid``;
    the log's store URL."""
    store, source = sqlite_database(), sqlite_database()
    configs = {
        rule: write_config(
            tmp_path / f"{rule}.toml",
            {"store": {"url": store}, "sources": {"svc": {"url": source, "binary_ids": rule}}},
        )
        for rule in ("uuid", "hex")
    }
    assert run_cli(["migrate", "--config", str(configs["uuid"])]).exit_code == 0
    recorded = run_cli(["outbox", "binary-ids", "svc", "uuid", "-y", "-c", str(configs["uuid"])])
    assert recorded.exit_code == 0, recorded.output
    assert recorded_rules_by_sql(store) == {"svc": "uuid"}
    return configs["hex"], store


@pytest.mark.parametrize(
    ("keys", "code", "said"),
    [
        (CTRL_C, 130, "error: interrupted (Ctrl-C) at the question: nothing changed"),
        (CTRL_D, 1, "error: no answer (end of input): nothing changed"),
        (b"\n", 1, "error: nothing switched"),
    ],
    ids=["ctrl-c", "ctrl-d", "enter"],
)
def test_the_binary_ids_question_switches_nothing(
    switched: tuple[Path, str], keys: bytes, code: int, said: str
) -> None:
    config, store = switched

    answered = at_a_terminal(keys, "outbox", "binary-ids", "svc", "hex", "-c", str(config))

    assert answered.returncode == code, answered
    assert "switch binary_ids of svc from 'uuid' to 'hex'?" in answered.stderr
    assert said in answered.stderr
    assert "Aborted" not in answered.stderr and "Traceback" not in answered.stderr
    assert recorded_rules_by_sql(store) == {"svc": "uuid"}


def test_the_binary_ids_switch_goes_on_at_yes(switched: tuple[Path, str]) -> None:
    config, store = switched

    done = at_a_terminal(b"yes\n", "outbox", "binary-ids", "svc", "hex", "-c", str(config))

    assert done.returncode == 0, done
    assert "svc: binary_ids switched from 'uuid' to 'hex'" in done.stdout
    assert recorded_rules_by_sql(store) == {"svc": "hex"}
