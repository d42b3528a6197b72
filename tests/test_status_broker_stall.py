"""A broker that accepts connections and never answers (a stopped process, a partition) is
reported as the unreachable broker it is, once: ``broker: broker unreachable: ...`` as for
a broker refusing connections, not ``broker: broker: no answer ...``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_helpers import run_cli, write_config


@pytest.mark.parametrize(("command", "code"), [("health", 1), ("status", 3)])
def test_a_silent_broker_is_named_unreachable_once(
    tmp_path: Path, silent_port: int, command: str, code: int
) -> None:
    config = write_config(
        tmp_path / "rm.toml",
        {
            "store": {"url": f"sqlite:///{tmp_path}/store.db"},
            "broker": {"url": f"redis://127.0.0.1:{silent_port}/0"},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0

    result = run_cli([command, "--config", str(config), "--timeout", "1"])

    assert result.exit_code == code, result.output
    assert "broker: broker unreachable: " in result.stderr
    assert "broker: broker: " not in result.stderr
