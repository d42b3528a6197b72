"""Relay timings that would make a loop spin are configuration errors naming the file and
the key: a standby retrying every 0s reconnected to the source's database without pause."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from config import ConfigError, load_settings
from tests.cli_helpers import run_cli, write_config


@pytest.mark.parametrize(
    ("section", "key", "value", "minimum"),
    [
        pytest.param("relay", "standby_retry", "0s", "100ms", id="standby-retry-zero"),
        pytest.param("relay", "standby_retry", "99ms", "100ms", id="standby-retry-short"),
        pytest.param("relay", "purge_every", "0s", "1s", id="purge-every-zero"),
        pytest.param("sources.svc", "poll_max", "0ms", "10ms", id="poll-max-zero"),
        pytest.param("tenants.pos.source", "poll_max", "1ms", "10ms", id="tenant-poll-max"),
    ],
)
def test_a_spinning_timing_names_file_and_key(
    tmp_path: Path, section: str, key: str, value: str, minimum: str
) -> None:
    path = tmp_path / "rm.toml"
    head = {
        "relay": "",
        "sources.svc": 'url = "sqlite:///svc.db"\n',
        "tenants.pos.source": "",
    }[section]
    registry = '[tenants.pos]\nurl = "sqlite:///registry.db"\n' if section.startswith("t") else ""
    path.write_text(f'{registry}[{section}]\n{head}{key} = "{value}"\n', encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert f"{path}: {section}.{key}: must be at least {minimum}" in str(caught.value)


def test_the_cli_exits_2_for_a_zero_standby_retry(tmp_path: Path) -> None:
    path = write_config(tmp_path / "rm.toml", {"relay": {"standby_retry": "0s"}})

    result = run_cli(["relay", "--once", "--config", str(path)])

    assert result.exit_code == 2, result.output
    assert "relay.standby_retry" in result.stderr


def test_the_minimums_and_a_zero_poll_min_are_taken(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "rm.toml",
        {
            "relay": {"standby_retry": "100ms", "purge_every": "1s", "linger": "0ms"},
            "sources": {"svc": {"url": "sqlite:///svc.db", "poll_min": "0ms", "poll_max": "10ms"}},
        },
    )

    settings = load_settings(path)

    assert settings.relay.standby_retry == timedelta(milliseconds=100)
    assert settings.relay.linger == timedelta(0)
    assert settings.sources["svc"].poll_min == timedelta(0)
