"""The question a bulk parked command asks at a terminal: Ctrl-C there exits 130 and the end
of input (Ctrl-D) exits 1, each saying that nothing changed (click's prompt said
"Aborted!" and exited 1 for both); nothing is changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from config import load_settings
from outbox.db import create_engine
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import init_outbox, insert_events
from tests.terminal_helpers import CTRL_C, CTRL_D, at_a_terminal


@pytest.fixture
def config(tmp_path: Path, sqlite_database: Callable[[], str]) -> Path:
    """``balances`` with accounts x and y each holding a withdrawal whose payload matches no
    model (parked at once) and a deposit held behind it."""
    data = {
        "projections": ["tests.projection_fixtures:Balances"],
        "store": {"url": sqlite_database()},
        "engine": {"max_attempts": 1},
        "sources": {"bank": {"url": sqlite_database()}},
    }
    path = write_config(tmp_path / "readmodel.toml", data)
    init_outbox(load_settings(path).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(path)]).exit_code == 0
    source = create_engine(data["sources"]["bank"]["url"])
    insert_events(
        source,
        [
            *[("account", a, "Withdrawn", {"amunt": 1}) for a in "xy"],
            *[("account", a, "Deposited", {"amount": 10, "seq": 1}) for a in "xy"],
        ],
    )
    source.dispose()
    assert run_cli(["run", "--until-caught-up", "--config", str(path)]).exit_code == 0
    return path


def _statuses(config: Path) -> list[str]:
    listed = run_cli(["parked", "list", "--all", "--json", "-c", str(config)])
    assert listed.exit_code == 0, listed.output
    return sorted(e["status"] for e in json.loads(listed.stdout))


@pytest.mark.parametrize("action", ["retry", "skip"])
def test_ctrl_c_at_the_question_changes_nothing_and_exits_130(config: Path, action: str) -> None:
    args = ["parked", action, "--projection", "balances", "-c", str(config)]

    stopped = at_a_terminal(CTRL_C, *args)

    assert stopped.returncode == 130, stopped
    assert f"{action} them? [y/N]" in stopped.stderr
    assert "error: interrupted (Ctrl-C) at the question: nothing changed" in stopped.stderr
    assert "Aborted!" not in stopped.stderr and "Traceback" not in stopped.stderr
    assert "done:" not in stopped.stdout
    assert _statuses(config) == ["parked"] * 4


def test_the_end_of_input_at_the_question_changes_nothing_and_exits_1(config: Path) -> None:
    args = ["parked", "skip", "--projection", "balances", "--type", "Withdrawn", "-c", str(config)]

    ended = at_a_terminal(CTRL_D, *args)

    assert ended.returncode == 1, ended
    assert "error: no answer (end of input): nothing changed" in ended.stderr
    assert "Aborted!" not in ended.stderr and "Traceback" not in ended.stderr
    assert _statuses(config) == ["parked"] * 4


def test_ctrl_c_at_the_question_of_a_purge_deletes_nothing(config: Path) -> None:
    skip = ["parked", "skip", "-p", "balances", "--type", "Withdrawn", "-y", "-c", str(config)]
    assert run_cli(skip).exit_code == 0

    stopped = at_a_terminal(CTRL_C, "parked", "purge", "-p", "balances", "-c", str(config))

    assert stopped.returncode == 130, stopped
    assert "delete them? [y/N]" in stopped.stderr
    assert "interrupted (Ctrl-C) at the question: nothing changed" in stopped.stderr
    assert _statuses(config) == ["retried", "retried", "skipped", "skipped"]
