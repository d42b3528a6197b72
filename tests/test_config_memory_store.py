"""A read store is a file or a server: an in-memory SQLite database (``sqlite://``,
``sqlite:///:memory:``) keeps nothing between processes, so ``migrate`` said it migrated a
store that every other command then found unmigrated, asking for ``migrate`` again. It is
a configuration error naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, load_settings
from tests.cli_helpers import run_cli, write_config


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
@pytest.mark.parametrize("table", ["store", "stores.extra"])
def test_an_in_memory_store_names_the_key(tmp_path: Path, url: str, table: str) -> None:
    data = {"store": {"url": url}} if table == "store" else {"stores": {"extra": {"url": url}}}
    path = write_config(tmp_path / "rm.toml", data)

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert f"{path}: {table}.url: " in str(caught.value)
    assert "in-memory SQLite database" in str(caught.value)


def test_migrate_refuses_it_instead_of_saying_it_migrated(tmp_path: Path) -> None:
    path = write_config(tmp_path / "rm.toml", {"store": {"url": "sqlite://"}})

    result = run_cli(["migrate", "--config", str(path)])

    assert result.exit_code == 2, result.output
    assert "migrated" not in result.stdout
    assert "store.url" in result.stderr


def test_a_store_file_is_taken(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    path = write_config(tmp_path / "rm.toml", {"store": {"url": url}})

    assert load_settings(path).store.url == url
