"""A tenant's read waiting for a token of an unknown source is refused without listing the
known sources: they include every tenant's member source (``pos:acme``, ``pos:globex``), so
a tenant learnt the others. A read of a projection without tenants still lists them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli_helpers import run_cli, write_config
from tests.tenant_fixtures import tenant_source


@pytest.fixture
def config(tmp_path: Path, sqlite_database: Callable[[], str]) -> Path:
    path = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.tenant_fixtures", "tests.projection_fixtures:Totals"],
            "store": {"url": sqlite_database()},
            "sources": {
                "bank": {"url": sqlite_database()},
                "pos:acme": tenant_source(sqlite_database(), "acme"),
                "pos:globex": tenant_source(sqlite_database(), "globex"),
            },
        },
    )
    assert run_cli(["migrate", "--config", str(path)]).exit_code == 0
    return path


@pytest.mark.parametrize(
    "read",
    [
        ["--where", "day=2026-11-26", "--allow-unindexed"],  # a list
        ["acme,2026-11-26"],  # a get
    ],
    ids=["list", "get"],
)
def test_a_tenant_read_is_not_told_the_known_sources(config: Path, read: list[str]) -> None:
    result = run_cli(
        ["query", "sales_by_day", *read, "--tenant", "acme", "--wait-for", "nosuch:1"]
        + ["--timeout", "0", "--config", str(config)]
    )

    assert result.exit_code == 2, result.output
    assert "unknown source 'nosuch'" in result.stderr
    assert "not shown to tenant reads" in result.stderr
    for name in ("pos:globex", "globex", "pos:acme", "bank"):
        assert name not in result.stderr


def test_a_read_without_tenants_lists_the_known_sources(config: Path) -> None:
    result = run_cli(
        ["query", "totals", "acc-1", "--wait-for", "nosuch:1", "--timeout", "0"]
        + ["--config", str(config)]
    )

    assert result.exit_code == 2, result.output
    assert "unknown source 'nosuch' (known: bank, pos:acme, pos:globex)" in result.stderr
