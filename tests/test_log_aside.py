"""Lines logged aside (the handler-timeout watchdog's, the stuck exit's) never hold their
caller up longer than it asks, whatever the log write waits on."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from structlog.testing import capture_logs

from projections import log_aside as aside
from tests.broker_helpers import wait_until


def test_a_blocked_write_holds_the_caller_no_longer_than_its_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(aside, "MAX_PENDING", 3)
    monkeypatch.setattr(aside, "_WRITER", aside._Writer())
    stderr_read = threading.Event()
    written: list[str] = []

    def log(event: str, **fields: Any) -> None:
        stderr_read.wait(30)  # the write waits, as on a full pipe nobody reads
        written.append(event)

    started = time.monotonic()
    assert aside.log_aside(log, "first", wait=0.2) is False  # taken, waiting on stderr
    for n in range(3):
        assert aside.log_aside(log, f"kept {n}") is False  # kept for later, no wait
    assert aside.log_aside(log, "dropped") is False
    assert time.monotonic() - started < 2
    with capture_logs() as logs:
        stderr_read.set()
        assert wait_until(lambda: len(written) == 4, 10)  # the lines kept, in order
        assert aside.log_aside(log, "last", wait=10) is True
    assert written == ["first", "kept 0", "kept 1", "kept 2", "last"]
    assert [(e["event"], e["lines"]) for e in logs] == [
        ("log lines dropped: stderr was not read", 1)
    ]


def test_a_line_that_fails_is_lost_not_the_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aside, "_WRITER", aside._Writer())

    def broken(event: str, **fields: Any) -> None:
        raise BrokenPipeError

    written: list[str] = []
    assert aside.log_aside(broken, "lost", wait=5) is True
    assert aside.log_aside(lambda event: written.append(event), "next", wait=5) is True
    assert written == ["next"]
