"""Operating the ``binary_ids`` rule the event log records: which names ``readmodel outbox
binary-ids`` takes, how a refused relay exits and logs, where a setting is said to come
from, what ``status``, ``health`` and ``migrate`` say about it. MariaDB sources, PostgreSQL
and SQLite logs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from tests.cli_helpers import run_cli
from tests.test_binary_ids import source_db  # noqa: F401
from tests.test_binary_ids_rule import (
    _config,
    _drain,
    _recorded,
    _write_events,
    outbox,  # noqa: F401
)

REFUSED = "not relaying the source: its binary_ids is not the rule the log records"


def test_a_setting_from_an_environment_variable_is_named_as_such(
    outbox: tuple[str, sa.Engine],  # noqa: F811
    pg_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    """``old.toml`` has no binary_ids: the refused setting comes from the variable, which
    the messages name instead of crediting the file."""
    url, engine = outbox
    store = pg_database()
    new = _config(tmp_path, "new.toml", store, {"url": url, "binary_ids": "uuid"})
    old = _config(tmp_path, "old.toml", store, {"url": url})
    _write_events(engine, 1)
    assert _drain(new)[0].relayed == 1
    variable = "READMODEL_SOURCES__SVC__BINARY_IDS"

    relayed = run_cli(["relay", "--once", "-c", str(old)], env={variable: "hex"})
    switched = run_cli(
        ["outbox", "binary-ids", "svc", "uuid", "-c", str(old)], env={variable: "hex"}
    )

    assert relayed.exit_code == 2, relayed.output
    message = " ".join(relayed.stderr.split())
    assert (
        f"source 'svc': binary_ids = 'hex' (environment variable {variable}) is not the rule "
        f"the event log records for it, 'uuid'"
    ) in message
    assert f"Set {variable}=uuid, as every relay of the source must have it" in message
    assert "in old.toml)" not in message
    assert switched.exit_code == 2, switched.output
    assert " ".join(switched.stderr.split()) == (
        f"error: source 'svc' is configured with binary_ids = 'hex' (environment variable "
        f"{variable}): set {variable}=uuid first, and in the config of every relay of the "
        f"source (a relay whose setting is not the recorded rule is refused)"
    )
    assert _recorded(store) == {"svc": "uuid"}
