"""Settings: broker and cache URLs are checked when the configuration is loaded, as DSNs
are, so that a typo is a configuration error naming the key and the file, not a crash of
``relay`` or ``work`` or a broker called unreachable by ``status``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from config import ConfigError, load_settings
from tests.cli_helpers import run_cli, write_config

SECRET = "Hunter2-Pa55word"


@pytest.mark.parametrize(
    ("data", "key", "expected"),
    [
        pytest.param(
            {"broker": {"url": f"redis://svc:{SECRET}@127.0.0.1:63a9/0"}},
            "broker.url",
            "the port is not a number",
            id="broker-port-letter",
        ),
        pytest.param(
            {"broker": {"url": f"amqp://svc:{SECRET}@127.0.0.1:99999/"}},
            "broker.url",
            "the port is out of range",
            id="broker-port-range",
        ),
        pytest.param(
            {"broker": {"url": f"redis://svc:{SECRET}@127.0.0.1:0/0"}},
            "broker.url",
            "the port is out of range",
            id="broker-port-zero",
        ),
        pytest.param(
            {"cache": {"url": f"redis://:{SECRET}@127.0.0.1:xx/1"}},
            "cache.url",
            "the port is not a number",
            id="cache-port-letter",
        ),
    ],
)
def test_a_bad_port_names_file_and_key(
    tmp_path: Path, data: dict[str, Any], key: str, expected: str
) -> None:
    path = write_config(tmp_path / "readmodel.toml", data)

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    message = str(caught.value)
    assert f"{path}: {key}: {expected}" in message
    assert SECRET not in message


def test_relay_given_a_broker_url_with_a_bad_port_exits_2_naming_it(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "readmodel.toml",
        {
            "store": {"url": f"sqlite:///{tmp_path}/store.db"},
            "sources": {"shop": {"url": f"sqlite:///{tmp_path}/shop.db"}},
            "broker": {"url": f"redis://svc:{SECRET}@127.0.0.1:63a9/0"},
        },
    )

    result = run_cli(["relay", "--once", "--config", str(path)])

    assert result.exit_code == 2, result.output
    assert "broker.url: the port is not a number" in result.stderr
    assert SECRET not in result.output + result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "memory://",
        "redis://127.0.0.1:6379/0",
        "redis://[::1]:6379/0",
        "rediss://:pw@cache.example:6380/2",
        "amqp://guest:guest@127.0.0.1:5672/%2F",
        "amqp://mq.example/",
    ],
)
def test_good_broker_urls_are_taken(tmp_path: Path, url: str) -> None:
    path = write_config(tmp_path / "readmodel.toml", {"broker": {"url": url}})

    assert load_settings(path).broker.url == url
