"""Run ``readmodel`` as an operator at a terminal does: its stdin a pseudo-terminal that is
its controlling terminal, so that keys typed there (an answer, Ctrl-C, Ctrl-D) reach it
through the terminal's line discipline, as from a keyboard."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import subprocess
import sys
import termios
import time
from collections.abc import Callable

CTRL_C = b"\x03"  # the terminal sends SIGINT to the command
CTRL_D = b"\x04"  # at the start of a line: the end of input


def _own_terminal() -> None:
    """In the child, a session leader (``start_new_session``): make stdin, the terminal,
    its controlling terminal, the child's process group the one in the foreground."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def at_a_terminal(
    keys: bytes,
    *args: str,
    after: str = "[y/N]",
    timeout: float = 120,
    when: Callable[[], bool] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``readmodel ARGS`` at a terminal: once ``after`` (its question) is on its stderr, or
    ``when()`` holds (the command is where the test wants it, saying nothing), ``keys``
    are typed; returns its exit code, stdout and stderr."""
    controller, terminal = pty.openpty()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *args],
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ),
            start_new_session=True,
            preexec_fn=_own_terminal,
        )
        os.close(terminal)
        assert child.stderr is not None
        asked = b""
        deadline = time.monotonic() + timeout

        def due() -> bool:
            return when() if when is not None else after.encode() in asked

        while not due():
            left = deadline - time.monotonic()
            ready, _, _ = select.select([child.stderr], [], [], min(max(left, 0), 0.1))
            chunk = os.read(child.stderr.fileno(), 4096) if ready else b""
            if (ready and not chunk) or left <= 0:  # its stderr closed (it ended), time is up
                break
            asked += chunk
        if due():
            os.write(controller, keys)
        try:
            stdout, stderr = child.communicate(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            child.kill()
            stdout, stderr = child.communicate()
    finally:
        os.close(controller)
    return subprocess.CompletedProcess(
        child.args, child.returncode, stdout.decode(), (asked + stderr).decode()
    )
