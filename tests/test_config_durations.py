"""Settings: a duration no timedelta can hold (too long, infinite, not a number) is a
configuration error naming the file or variable and the key, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, load_settings
from tests.cli_helpers import run_cli, write_config


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        pytest.param("shutdown", "grace", "100000000000000000000", id="huge-integer"),
        pytest.param("health", "max_lag_seconds", "inf", id="infinite"),
        pytest.param("relay", "linger", "nan", id="not-a-number"),
        pytest.param("relay", "standby_retry", '"99999999999d"', id="huge-days"),
        pytest.param("cache", "ttl", '"9999999999999999999999ms"', id="huge-text"),
        pytest.param("shutdown", "grace", '"200000d"', id="longer-than-a-wait"),
    ],
)
def test_a_duration_past_what_a_timedelta_holds_names_file_and_key(
    tmp_path: Path, section: str, key: str, value: str
) -> None:
    path = tmp_path / "rm.toml"
    path.write_text(f"[{section}]\n{key} = {value}\n", encoding="utf-8")  # TOML as written

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert f"{path}: {section}.{key}: " in str(caught.value)


def test_a_long_duration_a_process_can_wait_for_is_taken(tmp_path: Path) -> None:
    path = write_config(tmp_path / "rm.toml", {"shutdown": {"grace": "36500d"}})

    assert load_settings(path).shutdown.grace.days == 36500


def test_a_huge_duration_from_a_variable_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("READMODEL_SHUTDOWN__GRACE", "99999999999999999999")

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert "environment variable READMODEL_SHUTDOWN__GRACE: shutdown.grace: " in str(caught.value)


def test_the_cli_exits_2_without_a_traceback(tmp_path: Path) -> None:
    path = write_config(tmp_path / "rm.toml", {"health": {"max_lag_seconds": 10**20}})

    result = run_cli(["health", "--config", str(path)])

    assert result.exit_code == 2, result.output
    assert "health.max_lag_seconds" in result.stderr
