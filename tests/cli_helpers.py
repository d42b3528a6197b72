"""Helpers for tests that run the ``readmodel`` command or write TOML settings files."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from typer.testing import CliRunner, Result

from config import load_settings
from outbox.log import EventLog
from tests.outbox_helpers import init_outbox
from workers.cli import app


def run_cli(
    args: Sequence[str], env: Mapping[str, str] | None = None, input: str | None = None
) -> Result:
    """Run ``readmodel ARGS`` in-process and return its exit code, stdout and stderr.

    The CLI configures structlog and the root logger to write to the stderr it sees, which
    here is the runner's temporary stream; both are put back afterwards so that later
    tests do not log into a closed file.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return CliRunner().invoke(
            app, list(args), input=input, env=dict(env or {}), catch_exceptions=False
        )
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)


def run_cli_process(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``readmodel ARGS`` in a subprocess (``python -m workers.cli``), as an operator runs it:
    its own exit code, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(os.environ),
    )


def with_password(dsn: str, password: str) -> str:
    """``dsn`` with ``password`` set (PostgreSQL's trust auth accepts and ignores it)."""
    return sa.make_url(dsn).set(password=password).render_as_string(hide_password=False)


def toml_text(data: Mapping[str, Any]) -> str:
    """A TOML document for nested dicts of strings, numbers and booleans (enough for settings)."""
    lines: list[str] = []
    _table(lines, [], data)
    return "\n".join(lines) + "\n"


def _table(lines: list[str], prefix: list[str], data: Mapping[str, Any]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    if prefix and (scalars or not tables):
        lines.append("[" + ".".join(_key(p) for p in prefix) + "]")
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in tables.items():
        _table(lines, [*prefix, key], value)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    return json.dumps(str(value))


def write_config(path: Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as a TOML settings file at ``path`` and return the path."""
    path.write_text(toml_text(data), encoding="utf-8")
    return path


def balances_config(path: Path, store: str, source: str) -> Path:
    """A config of the ``Balances`` projection in ``store``, fed by source ``bank``."""
    return write_config(
        path,
        {
            "projections": ["tests.projection_fixtures:Balances"],
            "store": {"url": store},
            "sources": {"bank": {"url": source}},
        },
    )


def totals_in_store(
    request: Any, tmp_path: Path, sqlite_database: Any, *, also: Sequence[str] = ()
) -> tuple[Path, dict[str, Any], str]:
    """A migrated config of ``totals`` (``doc_totals`` when ``request.param`` is ``"mongodb"``;
    a PostgreSQL store for ``"postgresql"``, else SQLite) and the projections ``also``,
    ``engine.max_attempts`` 1, fed by SQLite source ``bank`` (its outbox made): ``(config,
    its data, the projection's name)``."""
    data: dict[str, Any] = {
        "projections": ["tests.projection_fixtures:Totals", *also],
        "store": {"url": sqlite_database()},
        "engine": {"max_attempts": 1},
        "sources": {"bank": {"url": sqlite_database()}},
    }
    name = "totals"
    if request.param == "postgresql":
        data["store"] = {"url": request.getfixturevalue("pg_database")()}
    elif request.param == "mongodb":
        data["projections"] = [DOC_TOTALS, *also]
        data["stores"] = {"docs": {"url": request.getfixturevalue("mongo_database")()}}
        name = "doc_totals"
    config = write_config(tmp_path / "readmodel.toml", data)
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    return config, data, name


def table_rows(text: str) -> list[dict[str, str]]:
    """The rows of a rich table printed in ``text``, each cell's lines joined without the
    spaces (a cell may be wrapped at a space, or folded within a word)."""
    lines = text.splitlines()
    header = [line.strip("┃").split("┃") for line in lines if line.startswith("┃")]
    names = [
        " ".join(part.strip() for part in parts).strip() for parts in zip(*header, strict=True)
    ]
    rows: list[list[list[str]]] = []
    for line in lines:
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if cells[0]:
            rows.append([[] for _ in names])
        for parts, cell in zip(rows[-1], cells, strict=True):
            if cell:
                parts.append(cell)
    return [
        {name: "".join(parts).replace(" ", "") for name, parts in zip(names, row, strict=True)}
        for row in rows
    ]


def flat_toml(tables: dict[str, dict[str, Any]]) -> str:
    """A TOML document of flat tables with string, integer and boolean values."""
    out = []
    for name, values in tables.items():
        out.append(f"[{name}]")
        out += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        out.append("")
    return "\n".join(out)


DOC_TOTALS = "tests.document_fixtures:DocTotals"


def docs_config(
    directory: Path,
    log: EventLog,
    url: str,
    projections: list[str] | None = None,
    **tables: dict[str, Any],
) -> Path:
    """A config file: the log's database as [store], ``url`` as [stores.docs]."""
    config = directory / "readmodel.toml"
    store = {"url": log.engine.url.render_as_string(hide_password=False)}
    config.write_text(
        f"projections = {json.dumps(projections or [DOC_TOTALS])}\n"
        + flat_toml({"store": store, "stores.docs": {"url": url}, **tables}),
        encoding="utf-8",
    )
    return config


def unreachable_docs_config(path: Path, sqlite_url: Callable[[], str], secret: str) -> Path:
    """A migrated config at ``path``: the chat reference projection in a MongoDB store
    ``docs`` on a closed port (its password ``secret``), beside a SQLite ``[store]``."""
    written = write_config(
        path,
        {
            "projections": ["projections.reference.conversation_inbox:ConversationInbox"],
            "store": {"url": sqlite_url()},
            "stores": {
                "docs": {
                    "url": f"mongodb://reader:{secret}@127.0.0.1:1/readmodels"
                    "?serverSelectionTimeoutMS=300&connectTimeoutMS=300"
                }
            },
            "sources": {"auth": {"url": sqlite_url()}, "chat": {"url": sqlite_url()}},
        },
    )
    assert run_cli(["migrate", "--config", str(written)]).exit_code == 0
    return written
