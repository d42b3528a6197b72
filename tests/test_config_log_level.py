"""The log level is taken in any case, from the file and the environment alike, as
``--log-level`` takes it; a level that is none of them names its key and where it was set."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, load_settings
from tests.cli_helpers import run_cli, write_config


@pytest.mark.parametrize("written", ["DEBUG", "Debug", "debug"])
def test_the_environment_gives_the_level_in_any_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str
) -> None:
    monkeypatch.setenv("READMODEL_LOGGING__LEVEL", written)

    settings = load_settings(write_config(tmp_path / "c.toml", {}))

    assert settings.logging.level == "debug"


def test_the_file_gives_the_level_in_any_case(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", {"logging": {"level": "WARNING"}})

    assert load_settings(path).logging.level == "warning"


def test_an_upper_case_level_in_the_environment_runs_the_command(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.toml", {"store": {"url": f"sqlite:///{tmp_path / 'read.db'}"}}
    )

    result = run_cli(["migrate", "--config", str(path)], env={"READMODEL_LOGGING__LEVEL": "ERROR"})

    assert result.exit_code == 0, result.output
    assert "invalid configuration" not in result.output


def test_a_bad_level_in_the_environment_names_the_key_and_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("READMODEL_LOGGING__LEVEL", "LOUD")

    with pytest.raises(ConfigError) as error:
        load_settings(write_config(tmp_path / "c.toml", {}))

    message = str(error.value)
    assert "environment variable READMODEL_LOGGING__LEVEL: logging.level:" in message
    assert "'debug', 'info', 'warning' or 'error'" in message
    assert "'LOUD'" in message


def test_a_bad_level_in_the_file_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", {"logging": {"level": "Verbose"}})

    with pytest.raises(ConfigError) as error:
        load_settings(path)

    assert f"{path}: logging.level:" in str(error.value)
    assert "'Verbose'" in str(error.value)
