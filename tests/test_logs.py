"""Logging: a logged exception never shows a password, whatever its frames held."""

from __future__ import annotations

import pytest
import structlog

from workers.logs import configure_logging

SECRET = "Hunter2Secret"


def _open(dsn: str) -> None:
    raise ModuleNotFoundError("No module named 'psycopg2'")


def _fail_with_a_dsn_in_a_frame() -> None:
    dsn = f"postgresql+psycopg2://bob:{SECRET}@127.0.0.1:5432/pos_bob"
    settings = {"url": dsn, "tenant": "bob"}
    _open(settings["url"])


@pytest.mark.parametrize("json_output", [False, True], ids=["console", "json"])
def test_a_logged_exception_does_not_print_the_dsn_its_frames_held(
    capsys: pytest.CaptureFixture[str], json_output: bool
) -> None:
    configure_logging("info", json_output=json_output)
    try:
        try:
            _fail_with_a_dsn_in_a_frame()
        except ModuleNotFoundError:
            structlog.get_logger("test").exception("refresh failed", registry="pos")
        try:
            raise ValueError(f"cannot open postgresql://bob:{SECRET}@db/pos")
        except ValueError:
            structlog.get_logger("test").exception("open failed")
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err
    assert "refresh failed" in err and "ModuleNotFoundError" in err and "open failed" in err
    assert "_fail_with_a_dsn_in_a_frame" in err  # the traceback is there, its locals are not
    assert SECRET not in err
