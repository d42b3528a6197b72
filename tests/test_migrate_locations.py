"""``readmodel migrate`` names a read store by where it is only (``postgresql://host:port/db``,
as readmodel logs it), never its user, password or DSN query: in its progress lines, in
``--check``, and in its errors (a table that is not readmodel's, a newer revision)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from outbox.db import create_engine
from outbox.migrate import VERSION_TABLE, head, upgrade
from tests.cli_helpers import run_cli, with_password, write_config

SECRET = "Mig-Loc-0815"
QUERY = "application_name=rm_migrate_q"


def _store(pg_database: Callable[[], str]) -> tuple[str, str]:
    """A fresh store's DSN with a user, a password and a query; and its location."""
    plain = pg_database()
    where = sa.make_url(plain)
    return (
        f"{with_password(plain, SECRET)}?{QUERY}",
        f"postgresql://{where.host}:{where.port}/{where.database}",
    )


def _config(tmp_path: Path, url: str) -> str:
    data = {"store": {"url": url}, "sources": {"shop": {"url": f"sqlite:///{tmp_path / 's.db'}"}}}
    return str(write_config(tmp_path / "readmodel.toml", data))


def _hidden(output: str) -> None:
    for leak in (SECRET, "***", "postgres@", "rm_migrate_q"):
        assert leak not in output, output


def test_migrate_and_check_name_the_store_by_location(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    url, location = _store(pg_database)
    config = _config(tmp_path, url)

    checked = run_cli(["migrate", "--check", "--config", config])
    assert checked.exit_code == 1, checked.output
    assert checked.stderr.startswith(f"error: the read store at {location} is at revision none")
    _hidden(checked.output)

    migrated = run_cli(["migrate", "--config", config])
    assert migrated.exit_code == 0, migrated.output
    assert f"default ({location}): migrated from revision none to {head()}" in migrated.stdout
    _hidden(migrated.output)

    again = run_cli(["migrate", "--config", config])
    assert f"default ({location}): already at revision {head()}" in again.stdout
    checked = run_cli(["migrate", "--check", "--config", config])
    assert f"default ({location}): at revision {head()}" in checked.stdout
    _hidden(again.output + checked.output)


def test_migrate_errors_name_the_store_by_location(
    pg_database: Callable[[], str], tmp_path: Path
) -> None:
    url, location = _store(pg_database)
    config = _config(tmp_path, url)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE rm_checkpoints (name TEXT PRIMARY KEY)")
        foreign = run_cli(["migrate", "--config", config])
        assert foreign.exit_code != 0, foreign.output
        assert f"table rm_checkpoints in the read store at {location} is not" in foreign.stderr
        _hidden(foreign.output)

        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE rm_checkpoints")
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '0099'"))
        newer = run_cli(["migrate", "--config", config])
        assert newer.exit_code != 0, newer.output
        assert f"the read store at {location} is at revision 0099" in newer.stderr
        _hidden(newer.output)
    finally:
        engine.dispose()
