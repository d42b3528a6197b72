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
        pytest.param(
            {"broker": {"url": f"redis://:{SECRET}@127.0.0.1:6379/0?socket_timeout=ten"}},
            "broker.url",
            "Invalid value for 'socket_timeout'",
            id="broker-redis-parameter-value",
        ),
        pytest.param(
            {"broker": {"url": f"redis://127.0.0.1:6379/0?socket_timout=10&password={SECRET}"}},
            "broker.url",
            "unknown URL parameter 'socket_timout'",
            id="broker-redis-parameter-typo",
        ),
        pytest.param(
            {"broker": {"url": f"amqp://svc:{SECRET}@127.0.0.1:5672/%2F?heartbeat=often"}},
            "broker.url",
            "Invalid heartbeat value 'often'",
            id="broker-amqp-parameter-value",
        ),
        pytest.param(
            {"broker": {"url": f"amqp://svc:{SECRET}@127.0.0.1:5672/%2F?heartbeet=30"}},
            "broker.url",
            "Unknown URL parameter: 'heartbeet'",
            id="broker-amqp-parameter-typo",
        ),
        pytest.param(
            {"cache": {"url": f"redis://:{SECRET}@127.0.0.1:6379/1?socket_connect_timeout=x"}},
            "cache.url",
            "Invalid value for 'socket_connect_timeout'",
            id="cache-redis-parameter-value",
        ),
    ],
)
def test_a_bad_url_names_file_and_key(
    tmp_path: Path, data: dict[str, Any], key: str, expected: str
) -> None:
    path = write_config(tmp_path / "readmodel.toml", data)

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    message = str(caught.value)
    line = next((line for line in message.splitlines() if f"{path}: {key}: " in line), "")
    assert expected in line, message
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
        "redis://127.0.0.1:6379/0?socket_timeout=10&socket_connect_timeout=10",
        "unix:///run/redis.sock?db=1",
        "amqp://guest:guest@127.0.0.1:5672/%2F?heartbeat=30&connection_attempts=3",
    ],
)
def test_good_broker_urls_are_taken(tmp_path: Path, url: str) -> None:
    if url.startswith("unix:"):  # a cache URL only
        path = write_config(tmp_path / "readmodel.toml", {"cache": {"url": url}})
        assert load_settings(path).cache.url == url
        return
    path = write_config(tmp_path / "readmodel.toml", {"broker": {"url": url}})

    assert load_settings(path).broker.url == url
