"""When a blue/green rebuild stops catching up with the log's head and swaps (tables and
documents alike)."""

from __future__ import annotations


class CatchUp:
    """Told how far behind the head each pass over the log started, says when to swap:
    once a pass found less than a batch to do, or no less than the pass before while no
    source was added (live writes come as fast as the rebuild goes: another pass would
    find as much again). The swap applies the rest under the live lanes' locks. A source
    added in a pass (a new tenant, its whole history) gets passes of its own first."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._last: int | None = None

    def done(self, behind: int, *, added: bool) -> bool:
        stalled = not added and self._last is not None and behind >= self._last
        self._last = behind
        return behind < self.batch_size or stalled
