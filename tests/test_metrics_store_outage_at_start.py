"""``readmodel metrics`` started while its read store cannot be reached (a database outage
under a Procfile or a container) serves ``readmodel_store_up 0`` instead of exiting, and
the store's figures once it is up and migrated; a store that then answers at another
schema revision still stops it, exit 2 with the command to run, as at start.

The store is a PostgreSQL database created (and dropped) by the test after the server
started, scraped over HTTP."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.broker_helpers import wait_until
from tests.cli_helpers import run_cli, write_config
from tests.metrics_helpers import free_port, scrape, start_metrics, stop_metrics

PG_ADMIN = os.environ.get("READMODEL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
UP = 'readmodel_store_up{store="default"}'


@pytest.fixture
def later_database() -> Iterator[tuple[str, sa.Engine]]:
    """The DSN of a PostgreSQL database not created yet, and an admin engine to create it;
    dropped after the test if it was."""
    name = f"rm_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(
        sa.make_url(PG_ADMIN).set(drivername="postgresql+psycopg"),
        isolation_level="AUTOCOMMIT",
        poolclass=sa.NullPool,
    )
    yield sa.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False), admin
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def _create(admin: sa.Engine, url: str) -> None:
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{sa.make_url(url).database}"')


def _config(tmp_path: Path, url: str) -> Path:
    return write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": url},
            "sources": {"bank": {"url": f"sqlite:///{tmp_path / 'bank.db'}"}},
        },
    )


def test_metrics_serve_store_up_0_through_an_outage_at_start_then_the_store_s_figures(
    later_database: tuple[str, sa.Engine], tmp_path: Path
) -> None:
    url, admin = later_database
    config = _config(tmp_path, url)
    port = free_port()
    process = start_metrics(config, port)
    try:
        assert wait_until(lambda: UP in scrape(port) or process.poll() is not None, 60)
        assert process.poll() is None, stop_metrics(process)
        assert scrape(port)[UP] == 0

        _create(admin, url)
        migrated = run_cli(["migrate", "--config", str(config)])
        assert migrated.exit_code == 0, migrated.output
        assert wait_until(lambda: scrape(port).get(UP) == 1, 60)
        assert process.poll() is None
    finally:
        stderr = stop_metrics(process)
    assert "cannot be reached" in stderr, stderr


def test_metrics_stop_with_exit_2_once_the_store_answers_at_another_revision(
    later_database: tuple[str, sa.Engine], tmp_path: Path
) -> None:
    url, admin = later_database
    config = _config(tmp_path, url)
    port = free_port()
    process = start_metrics(config, port)
    try:
        assert wait_until(lambda: UP in scrape(port) or process.poll() is not None, 60)
        assert process.poll() is None, stop_metrics(process)
        _create(admin, url)  # up, never migrated
        scrape(port)
        assert wait_until(lambda: process.poll() is not None, 60)
    finally:
        stderr = stop_metrics(process)
    assert process.returncode == 2, stderr
    assert "is at revision none, this readmodel needs" in stderr
    assert f"run `readmodel migrate --config {config}`" in stderr
