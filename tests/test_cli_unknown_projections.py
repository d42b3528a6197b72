"""A projection name the settings do not have is a usage error (exit 2) naming it and the
configured ones, in every command that takes one: ``parked list --projection`` listed
nothing, as if nothing were parked, and ``parked show/retry/skip e1@NAME`` said there was
no such entry (exit 1)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli_helpers import run_cli, write_config


@pytest.fixture
def config(tmp_path: Path, sqlite_database: Callable[[], str]) -> Path:
    path = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": sqlite_database()},
            "sources": {"bank": {"url": sqlite_database()}},
        },
    )
    assert run_cli(["migrate", "--config", str(path)]).exit_code == 0
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["parked", "list", "--projection", "nosuch"],
        ["parked", "list", "--projection", "nosuch", "--json"],
        ["parked", "show", "e1@nosuch"],
        ["parked", "retry", "e1@nosuch"],
        ["parked", "skip", "e1@nosuch"],
        ["replay", "nosuch", "--dry-run"],
        ["query", "nosuch", "k1"],
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_an_unknown_projection_is_named_with_the_configured_ones(
    config: Path, command: list[str]
) -> None:
    result = run_cli([*command, "--config", str(config)])

    assert result.exit_code == 2, result.output
    assert "unknown projection 'nosuch'" in result.stderr
    assert "totals" in result.stderr
    assert result.stdout == ""


def test_a_configured_projection_with_nothing_parked_lists_nothing(config: Path) -> None:
    result = run_cli(
        ["parked", "list", "--projection", "totals", "--json", "--config", str(config)]
    )

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "[]"
