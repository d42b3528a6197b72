"""A pipe for a worker subprocess's stdout and stderr that the test can fill, so that the
worker's next write waits, as it does behind a log reader that stopped reading."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable

FILLER = b"\0"  # never in a log line


class FullPipe:
    """Give :attr:`write_end` to the child (then :meth:`close_write_end`); :meth:`fill`
    leaves no room in the pipe, and whoever writes to it waits until :meth:`drain` reads."""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)

    def fill(self) -> None:
        """Write until the pipe is full, through a description of its own: the child's
        writes stay blocking (O_NONBLOCK belongs to the open file description)."""
        filler = os.open(f"/proc/self/fd/{self.write_end}", os.O_WRONLY | os.O_NONBLOCK)
        try:
            for size in (4096, 1):
                try:
                    while True:
                        os.write(filler, FILLER * size)
                except BlockingIOError:
                    pass
        finally:
            os.close(filler)

    def close_write_end(self) -> None:
        """Once the child has it: the test's copy would keep the pipe from ending."""
        os.close(self.write_end)

    def read_until(self, check: Callable[[str], bool], timeout: float) -> bool:
        """Read (in this thread) until ``check(text so far)`` holds; whether it did."""
        deadline = time.monotonic() + timeout
        while not check(self._text()):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_end], [], [], min(left, 0.2))[0]:
                if left <= 0:
                    return False
                continue
            chunk = os.read(self.read_end, 65536)
            if not chunk:
                return check(self._text())
            self.chunks.append(chunk)
        return True

    def drain(self) -> None:
        """Read on, in a thread, to the end."""
        if self.reader.ident is None:
            self.reader.start()

    def text(self) -> str:
        """What the writer wrote, to the end once it has exited (after :meth:`drain`)."""
        self.reader.join(timeout=5)
        return self._text()

    def close(self) -> None:
        """Read to the end (the writer gone), then close the read end."""
        self.drain()
        self.text()
        os.close(self.read_end)

    def _text(self) -> str:
        return b"".join(self.chunks).replace(FILLER, b"").decode(errors="replace")

    def _read(self) -> None:
        while chunk := os.read(self.read_end, 65536):
            self.chunks.append(chunk)
