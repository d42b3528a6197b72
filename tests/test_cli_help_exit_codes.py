"""``status --help`` and ``parked --help`` (and each parked command's) say that a read store
not at the schema revision this readmodel needs exits 2, as README says and as they do:
neither help mentioned it."""

from __future__ import annotations

import re

import pytest

from tests.cli_helpers import run_cli


def _help(command: list[str]) -> str:
    result = run_cli([*command, "--help"], env={"COLUMNS": "2000"})
    assert result.exit_code == 0, result.output
    return " ".join(re.sub("[│╭╮╰╯─]", " ", result.stdout).split())


def test_status_help_names_exit_2_for_a_store_to_migrate() -> None:
    text = _help(["status"])

    assert (
        "2 when a read store is not at the schema revision this readmodel needs "
        "(run 'readmodel migrate')" in text
    )
    assert "Exit code 3 when" in text


@pytest.mark.parametrize(
    "command",
    [
        ["parked"],
        ["parked", "list"],
        ["parked", "show"],
        ["parked", "retry"],
        ["parked", "skip"],
        ["parked", "purge"],
    ],
    ids=" ".join,
)
def test_parked_help_names_its_exit_codes(command: list[str]) -> None:
    text = _help(command)

    assert "Exit codes: 0 done, 1 failed" in text
    assert (
        "2 bad usage (an unknown projection, a bad entry id, a retry of a projection no "
        "longer configured, a bulk retry, skip or purge without --yes when not interactive), an "
        "invalid configuration or a read store not at the schema revision this readmodel "
        "needs (run 'readmodel migrate')" in text
    )
    assert "a bulk retry or skip left an aggregate parked; a bulk command was declined" in text
    assert "3 read store unreachable" in text
