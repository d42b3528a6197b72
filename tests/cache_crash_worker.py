"""A worker that dies (SIGKILL) right after a batch commits, before the cache is told.

``python -m tests.cache_crash_worker CONFIG``: applies the log like a worker does; the
first invalidation kills the process (tests/test_cache_crash.py).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable

from config import load_settings
from workers.runtime import build_runtime


def main(config: str) -> None:
    runtime = build_runtime(load_settings(config), migrate=False)
    cache = runtime.cache
    if cache is None:
        sys.exit("no cache configured")

    def die(projection: str, tags: Iterable[str]) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    cache.invalidate = die  # type: ignore[method-assign]
    runtime.engine.catch_up()
    sys.exit("no batch was applied")


if __name__ == "__main__":
    main(sys.argv[1])
