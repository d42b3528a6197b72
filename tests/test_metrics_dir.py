"""``metrics.dir`` that cannot be a directory (a file is there, or its parent cannot hold
one) is a configuration error naming the key and where it was set (exit 2), for every
process that records or serves metrics, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_helpers import run_cli, write_config


def _config(tmp_path: Path, metrics_dir: str) -> Path:
    path = write_config(
        tmp_path / "rm.toml",
        {
            "store": {"url": f"sqlite:///{tmp_path}/store.db"},
            "sources": {"shop": {"url": f"sqlite:///{tmp_path}/shop.db"}},
            "metrics": {"dir": metrics_dir, "port": 1},
        },
    )
    assert run_cli(["migrate", "--config", str(path)]).exit_code == 0
    assert run_cli(["outbox", "init", "--source", "shop", "--config", str(path)]).exit_code == 0
    return path


@pytest.mark.parametrize(
    "command",
    [["relay", "--once"], ["metrics", "--host", "127.0.0.1"]],
    ids=lambda c: c[0],
)
def test_a_file_where_the_directory_should_be_names_the_key_and_the_file(
    tmp_path: Path, command: list[str]
) -> None:
    taken = tmp_path / "not-a-dir"
    taken.write_text("x", encoding="utf-8")
    config = _config(tmp_path, str(taken))

    result = run_cli([*command, "--config", str(config)])

    assert result.exit_code == 2, result.output
    assert f"{config}: metrics.dir: " in result.stderr
    assert str(taken) in result.stderr


def test_set_by_a_variable_the_variable_is_named(tmp_path: Path) -> None:
    config = _config(tmp_path, "")
    taken = tmp_path / "not-a-dir"
    taken.write_text("x", encoding="utf-8")

    result = run_cli(
        ["relay", "--once", "--config", str(config)], env={"READMODEL_METRICS__DIR": str(taken)}
    )

    assert result.exit_code == 2, result.output
    assert "environment variable READMODEL_METRICS__DIR: metrics.dir: " in result.stderr
