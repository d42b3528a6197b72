"""Settings from the environment: a key holding a list or a table is given as JSON in its
variable; a value that is not JSON is a configuration error naming the variable and the
key (exit 2), never a traceback, and never showing the value (it may be a DSN)."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, load_settings
from tests.cli_helpers import run_cli, write_config

SECRET = "Hunter2-Pa55word"


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        pytest.param("READMODEL_PROJECTIONS", "my.projections", "projections", id="list"),
        pytest.param(
            "READMODEL_BROKER__MIDDLEWARE", "my.module:Middleware", "broker.middleware", id="nested"
        ),
        pytest.param(
            "READMODEL_STORE",
            f"postgresql://reader:{SECRET}@db/readstore",
            "store",
            id="table-given-a-dsn",
        ),
        pytest.param(
            "READMODEL_SOURCES__X__COLUMNS",
            "aggregate_id=agg",
            "sources.x.columns",
            id="source-table",
        ),
    ],
)
def test_a_value_that_is_not_json_names_the_variable_and_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, key: str
) -> None:
    path = write_config(tmp_path / "rm.toml", {"sources": {"x": {"url": "sqlite:///x.db"}}})
    monkeypatch.setenv("READMODEL_ENGINE__BATCH_SIZE", "10")  # a good one, not blamed
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    message = str(caught.value)
    assert f"environment variable {variable}: {key}: " in message
    assert "JSON" in message
    assert "READMODEL_ENGINE__BATCH_SIZE" not in message
    assert value not in message and SECRET not in message


def test_json_values_are_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("READMODEL_PROJECTIONS", '["my.projections"]')
    monkeypatch.setenv("READMODEL_BROKER__MIDDLEWARE", '["my.module:Middleware"]')

    settings = load_settings()

    assert settings.projections == ["my.projections"]
    assert settings.broker.middleware == ["my.module:Middleware"]


def test_the_cli_exits_2_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    path = write_config(tmp_path / "rm.toml", {"store": {"url": f"sqlite:///{tmp_path}/s.db"}})

    result = run_cli(
        ["status", "--config", str(path)], env={"READMODEL_PROJECTIONS": "my.projections"}
    )

    assert result.exit_code == 2, result.output
    assert "environment variable READMODEL_PROJECTIONS: projections: " in result.stderr
    assert "Traceback" not in result.output + result.stderr
