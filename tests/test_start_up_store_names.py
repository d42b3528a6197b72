"""With several read stores configured, the line of a process that cannot start on one of
them names the store by its config name as well as by where it is (no password), so an
operator knows which ``[stores.NAME]`` to look at.

Before: a MongoDB store's line gave its server's address only ("cannot create collections:
ServerSelectionTimeoutError: 127.0.0.1:PORT: timed out"), a PostgreSQL store's its location
only ("... on the read store at postgresql://127.0.0.1:PORT/db: ..."). A lone ``[store]``
keeps its unnamed line (tests/test_start_up_silent_store.py)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.broker_helpers import Processes
from tests.cli_helpers import run_cli, write_config

SECRET = "S3cret-Named-4711"
CLOSED = "127.0.0.1:1"  # nothing listens: connections are refused at once


def _errors(processes: Processes, key: str, timeout: float) -> tuple[int | None, list[str], str]:
    """The exit code (``None``: still running after ``timeout``), error lines and log."""
    try:
        code: int | None = processes.running[key].wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
    log = (processes.logs / f"{key}.log").read_text(errors="replace")
    return code, [line for line in log.splitlines() if line.startswith("error: ")], log


def test_a_silent_mongodb_store_is_named_in_the_start_up_line(
    tmp_path: Path,
    silent_port: int,
    sqlite_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
    processes: Processes,
) -> None:
    """``work`` and ``run`` beside a MongoDB store ``docs`` that never answers: exit 3 in one
    line naming ``docs`` and where it is, in the existing wording, without the password."""
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["projections.reference.conversation_inbox:ConversationInbox"],
            "store": {"url": sqlite_database()},
            "stores": {"docs": {"url": f"mongodb://rm:{SECRET}@127.0.0.1:{silent_port}/docs"}},
            "sources": {"auth": {"url": sqlite_database()}, "chat": {"url": sqlite_database()}},
            "broker": broker_for("redis"),
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    keys = [
        processes.start("work", "work", "-t", "1", "--config", str(config)),
        processes.start("run", "run", "--config", str(config)),
    ]

    for key in keys:
        code, errors, log = _errors(processes, key, 25)
        assert code == 3 and len(errors) == 1, log
        assert errors[0].startswith("error: cannot create collections in the read store docs "), log
        assert f"docs at mongodb://127.0.0.1:{silent_port}/docs: " in errors[0], log
        assert "ServerSelectionTimeoutError" in errors[0], log
        assert SECRET not in log and "Traceback" not in log, log


@pytest.mark.parametrize("down", ["default", "reports"])
def test_an_unreachable_postgresql_store_among_several_is_named(
    down: str,
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
    processes: Processes,
) -> None:
    """``work`` with two SQL stores, one refusing connections: exit 3 in one line naming
    the store that is down, ``default`` (``[store]``) or ``reports``, and where it is."""
    refused = f"postgresql://rm:{SECRET}@{CLOSED}/{down}"
    answering = sqlite_database()
    settings: dict[str, Any] = {
        "projections": ["tests.projection_fixtures:Totals"],
        "store": {"url": answering},
        "sources": {"bank": {"url": sqlite_database()}},
        "broker": broker_for("redis"),
    }
    assert (
        run_cli(["migrate", "--config", str(write_config(tmp_path / "m.toml", settings))]).exit_code
        == 0
    )
    if down == "default":
        settings["store"] = {"url": refused}
        settings["stores"] = {"reports": {"url": answering}}
    else:
        settings["stores"] = {"reports": {"url": refused}}
    config = write_config(tmp_path / "readmodel.toml", settings)
    key = processes.start("work", "work", "-t", "1", "--config", str(config))

    code, errors, log = _errors(processes, key, 25)
    assert code == 3 and len(errors) == 1, log
    assert errors[0].startswith("error: cannot read the schema revision on the read store "), log
    assert f"read store {down} at postgresql://{CLOSED}/{down}: " in errors[0], log
    assert SECRET not in log and "Traceback" not in log, log


def test_an_unmigrated_sqlite_store_among_several_is_named(
    tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    """A second SQLite store not migrated yet: exit 2 naming it, with the command to run."""
    settings: dict[str, Any] = {
        "projections": ["tests.projection_fixtures:Totals"],
        "store": {"url": sqlite_database()},
        "sources": {"bank": {"url": sqlite_database()}},
    }
    assert (
        run_cli(["migrate", "--config", str(write_config(tmp_path / "m.toml", settings))]).exit_code
        == 0
    )
    extra = sqlite_database()
    settings["stores"] = {"reports": {"url": extra}}
    config = write_config(tmp_path / "readmodel.toml", settings)

    result = run_cli(["status", "--config", str(config)])

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: the read store reports at {extra} is at revision"), (
        result.stderr
    )


def test_status_names_the_log_store_among_several(
    tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    """``status --json`` with the log's store (``[store]``) refusing connections beside a
    store ``reports``: the ``default`` store's error names it as the others' do."""
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": f"postgresql://rm:{SECRET}@{CLOSED}/rm"},
            "stores": {"reports": {"url": sqlite_database()}},
            "sources": {"bank": {"url": sqlite_database()}},
        },
    )

    result = run_cli(["status", "--json", "--timeout", "5", "--config", str(config)])

    assert result.exit_code == 3, result.output
    stores = {store["store"]: store for store in json.loads(result.stdout)["stores"]}
    assert stores["default"]["error"].startswith(
        f"read store default at postgresql://{CLOSED}/rm: "
    )
    assert SECRET not in result.stdout + result.stderr
