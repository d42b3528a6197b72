"""A private redis-server that stops answering (SIGSTOP: its connections stay open, the
kernel still ACKs)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stalled(server: subprocess.Popen[bytes]) -> Iterator[None]:
    """``server`` stopped for the block, always continued after it."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)
