"""A private redis-server that stops answering (SIGSTOP: its connections stay open, the
kernel still ACKs), and calls timed against it."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def stalled(server: subprocess.Popen[bytes]) -> Iterator[None]:
    """``server`` stopped for the block, always continued after it."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def outcome_within(call: Callable[[], Any], bound: float) -> tuple[Exception | None, float]:
    """Run ``call`` in a thread; return what it raised (``None`` if it returned) and how long
    it took. Fails the test if it is still running after ``bound`` seconds: the thread is
    left to finish once its server answers again."""
    outcome: list[Exception | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except Exception as exc:
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True, name="timed-call")
    thread.start()
    thread.join(bound)
    assert not thread.is_alive(), f"still waiting on the stalled Redis after {bound:g}s"
    return outcome[0], time.monotonic() - started
