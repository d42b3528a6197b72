"""``cli_support.interrupted_saying``: a real SIGINT in the block exits 130 with the block's
line, once, whether the block let the KeyboardInterrupt through, turned it into another
error (as a driver rolling back on the connection the Ctrl-C cut does) or kept it."""

from __future__ import annotations

import os
import signal
import time

import pytest
import typer

from workers.cli_support import fail, interrupted_saying


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)  # interrupted long before


def _turned_into_an_error() -> None:
    try:
        _ctrl_c()
    except KeyboardInterrupt:
        raise RuntimeError("the connection is closed") from None


def _kept() -> None:
    try:
        _ctrl_c()
    except KeyboardInterrupt:
        pass


@pytest.mark.parametrize("block", [_ctrl_c, _turned_into_an_error, _kept])
def test_a_ctrl_c_in_the_block_exits_130_with_its_line(
    block: object, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(typer.Exit) as stopped:
        with interrupted_saying("interrupted (Ctrl-C) here: nothing changed"):
            block()  # type: ignore[operator]

    assert stopped.value.exit_code == 130
    assert "error: interrupted (Ctrl-C) here: nothing changed" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_nested_blocks_say_only_the_innermost_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as stopped:
        with interrupted_saying("outer"), interrupted_saying("inner"):
            _ctrl_c()

    assert stopped.value.exit_code == 130
    said = capsys.readouterr().err
    assert "error: inner" in said and "outer" not in said


def test_no_ctrl_c_no_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError):
        with interrupted_saying("interrupted"):
            raise RuntimeError("an error of its own")

    assert "interrupted" not in capsys.readouterr().err


def test_an_error_the_ctrl_c_caused_is_not_said(capsys: pytest.CaptureFixture[str]) -> None:
    """A command that turned the driver's error into its own line (``fail``, as ``guarded``
    does) after the Ctrl-C: only the block's line, the error was the Ctrl-C's doing."""

    def said_as_an_error() -> None:
        try:
            _ctrl_c()
        except KeyboardInterrupt:
            raise fail("balances: apply failed: the connection is closed", 3) from None

    with pytest.raises(typer.Exit) as stopped:
        with interrupted_saying("interrupted (Ctrl-C) before catching up"):
            said_as_an_error()

    assert stopped.value.exit_code == 130
    said = capsys.readouterr().err
    assert "error: interrupted (Ctrl-C) before catching up" in said
    assert "apply failed" not in said


def test_an_error_without_ctrl_c_is_said(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as stopped:
        with interrupted_saying("interrupted"):
            raise fail("balances: apply failed: the server refused", 3)

    assert stopped.value.exit_code == 3
    assert "error: balances: apply failed" in capsys.readouterr().err
