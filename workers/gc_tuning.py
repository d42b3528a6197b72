"""Garbage-collector settings for the long-running worker processes."""

from __future__ import annotations

import gc
from collections.abc import Callable

YOUNG_THRESHOLD = 50_000


def tune_collector(young: int = YOUNG_THRESHOLD) -> Callable[[], None]:
    """Freeze what start-up allocated (modules, the runtime) out of the collector's scans and
    let the youngest generation grow to ``young`` objects between passes; returns a function
    that puts the previous settings back.

    Applying a batch allocates tens of thousands of objects that live until the batch
    commits (envelopes, payloads, pending rows) while the log reader keeps recent ranges in
    memory. With the default threshold (700) the collector keeps scanning and promoting
    them, and its full passes rescan every imported module: a quarter of the apply CPU.
    """
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(max(young, previous[0]), *previous[1:])

    def restore() -> None:
        gc.set_threshold(*previous)
        gc.unfreeze()

    return restore
