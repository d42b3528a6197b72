"""``status`` and ``health`` only read: a SQLite source whose file is not there (a typo in
its path, a volume not mounted) is reported as missing, and no empty database file is left
in its place (where ``outbox init`` would then make an outbox the service never writes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_helpers import run_cli, write_config


@pytest.mark.parametrize(("command", "code"), [("status", 3), ("health", 1)])
def test_a_missing_source_file_is_reported_and_not_created(
    tmp_path: Path, command: str, code: int
) -> None:
    missing = tmp_path / "shpo.db"
    config = write_config(
        tmp_path / "rm.toml",
        {
            "store": {"url": f"sqlite:///{tmp_path}/store.db"},
            "sources": {"shop": {"url": f"sqlite:///{missing}"}},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0

    result = run_cli([command, "--config", str(config)])

    assert result.exit_code == code, result.output
    assert f"source 'shop': the database file {missing} does not exist" in result.stderr
    assert not missing.exists()
    assert list(tmp_path.glob("shpo.db*")) == []
