"""Rebuild a projection from the event log: blue/green into shadow tables, or in place.

Blue/green (the default): the projection's tables get shadow copies
(:mod:`projections.shadow`), which are filled from the log, source by source in log order,
in large batches (one transaction and one shadow-checkpoint update per batch, no row
locks: nothing else writes a shadow), while the live lanes keep applying new events to
the live tables. Once the shadow is within one batch of the log head, one transaction
locks the live lanes' checkpoint rows (no live batch can interleave), applies the events
between the shadow's progress and the furthest live checkpoint, puts the shadow tables in
place of the live ones, sets every lane's checkpoint to what the shadow has applied, and
commits. Readers see the old model until that commit and the complete new one after.

Handlers are strict: an error stops the replay with the event; the live model is left as
it was. With ``skip_errors`` the failing event and every later event of its aggregate are
skipped instead (as live parking holds them), and the swap parks them: they show up in
``readmodel parked list`` and their aggregate is blocked until retried or skipped (in
place, the failing event alone is skipped and nothing parked: see
:class:`projections.replay_policy.ErrorPolicy`). The live projection's parked events
are re-attempted by the rebuild like any other event; at the swap they are marked
``replayed`` and their aggregates released; events an operator skipped are left out
(:mod:`projections.replay_skipped`).

In place (``from_position``, only for ``replay_safe`` projections): events after the
position are applied again to the live tables, batch by batch under the lanes' locks and
only up to each lane's checkpoint (the lanes apply the rest themselves), on past the
checkpoints it started at until it reaches the lanes' current ones (events live batches
applied meanwhile are re-applied after the older ones, see
:func:`projections.replay_scope.chase_checkpoints`); checkpoints do not move.
``source`` and ``tenant`` narrow an in-place replay to one source's lanes or one tenant's
events; they have no meaning for a rebuild, which must contain every event.

A replay holds a per-projection lock for its whole run (a PostgreSQL advisory lock, or
on SQLite an exclusive ``flock`` on ``<database>.replay-<projection>.lock``), so a second
replay of the same projection is refused; each of its transactions commits only while it
still holds it (:class:`projections.replay_lock.LockProof`). An interrupted rebuild
leaves the live tables untouched; its shadow tables are dropped by the next replay or
:meth:`Replayer.cleanup`.
So are old tables a swap could not drop under a bounded lock wait (left emptied, named in
the summary: :mod:`projections.shadow_drop`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from projections.api import Projection
from projections.log_reader import LogReader
from projections.log_stream import batch_gc
from projections.rebuild_names import rebuild_checkpoints
from projections.replay_fill import FILL_READ_SIZE, REBUILD_BATCH
from projections.replay_in_place import InPlaceReplay
from projections.replay_lock import LockProof, replay_lock, sql_replay_lock
from projections.replay_plan import table_plan
from projections.replay_policy import ErrorPolicy
from projections.replay_rebuild import BlueGreenRebuild
from projections.replay_skip_policy import SkipsPolicy
from projections.replay_skipped import sql_skips
from projections.replay_types import (
    BLUE_GREEN,
    IN_PLACE,
    ReplayError,
    ReplayHooks,
    ReplayLocked,
    ReplayOptions,
    ReplayPlan,
    ReplayRefused,
    ReplaySummary,
    SkippedEvent,
    SourcePlan,
)
from projections.shadow import ShadowTables
from projections.sql_store import SqlStore
from projections.sql_tx import NewRows
from projections.store import Store

__all__ = [  # the data types live in projections.replay_types; importable from here too
    "BLUE_GREEN",
    "IN_PLACE",
    "ReplayError",
    "ReplayHooks",
    "ReplayLocked",
    "ReplayOptions",
    "ReplayPlan",
    "ReplayRefused",
    "Replayer",
    "ReplaySummary",
    "SkippedEvent",
    "SourcePlan",
    "replay_lock",
]

IN_PLACE_BATCH = 20_000
"""Events per transaction in place and in the swap's catch-up when no batch size is given."""


class Replayer(InPlaceReplay, BlueGreenRebuild):
    """Rebuilds one projection; plain Python (the CLI only parses and prints)."""

    def __init__(
        self,
        reader: LogReader,
        projection: Projection,
        store: Store,
        *,
        cache: Any = None,
        hooks: ReplayHooks | None = None,
        batch_size: int | None = None,
        read_size: int | None = None,
    ) -> None:
        if not isinstance(store, SqlStore):
            raise ReplayRefused(
                f"{projection.name}: this replay is for SQL stores (this projection's store "
                f"{projection.store!r} is not one: see projections.document_replay)"
            )
        self.reader = reader
        self.projection = projection
        self.store = store
        self.cache = cache
        self.hooks = hooks or ReplayHooks()
        # Events per transaction in place (live lanes wait for each) and in the swap's
        # catch-up; a rebuild's own transactions hold nobody up and are larger, but on
        # SQLite, where one holds the database's only write lock (the live lanes' batches
        # wait for its commit, past the busy timeout fail), no larger.
        self.batch_size = batch_size or IN_PLACE_BATCH
        postgresql = self._postgresql = store.engine.dialect.name == "postgresql"
        self.rebuild_batch = batch_size or (REBUILD_BATCH if postgresql else IN_PLACE_BATCH)
        parts = -(-self.rebuild_batch // FILL_READ_SIZE)  # of equal size, none past 50,000
        self.read_size = read_size or -(-self.rebuild_batch // parts)
        self.shadow_projection = rebuild_checkpoints(projection.name)
        self.shadow = ShadowTables(projection.tables, projection=projection.name)
        self._policy = ErrorPolicy(projection.name, skip_errors=False, in_place=False)
        self._applied = 0
        self._total = 0
        self._reached: dict[str, int] = {}
        self._new_rows = NewRows()
        self._lock: LockProof | None = None  # while run() or cleanup() holds it
        self.left_alone: list[str] = []

    # -- planning ------------------------------------------------------------------

    def plan(self, options: ReplayOptions, *, carried: bool = True) -> ReplayPlan:
        """What :meth:`run` would do, with (``carried``) what a rebuild's swap would carry
        beside the declared model; changes nothing (:mod:`projections.replay_plan`)."""
        return table_plan(
            self.reader, self.projection, self.shadow, self.store.engine, options, carried=carried
        )

    # -- running -------------------------------------------------------------------

    def run(self, options: ReplayOptions) -> ReplaySummary:
        plan = self.plan(options, carried=False)
        self.swapped = False
        started = time.monotonic()
        try:
            with sql_replay_lock(self.store, self.projection.name) as self._lock:
                self._skips = sql_skips(self.store.writer, self.projection.name, options)
                self._policy = SkipsPolicy(self.projection.name, options, self._skips)
                self._total = plan.events
                self._reached = {}
                self.hooks.started(plan)
                summary = ReplaySummary(self.projection.name, options.mode)
                with batch_gc():
                    if options.mode == BLUE_GREEN:
                        self._rebuild(options, summary)
                    else:
                        self._in_place(options, plan, summary)
        finally:  # the next replay warns of a lookalike again (once: its plan, or itself)
            self._lock = None
            self.shadow.warned.clear()
        return self._finished(summary, started)

    def cleanup(self, drop_unmarked: Sequence[str] = ()) -> list[str]:
        """Drop the shadow and old tables and shadow checkpoints an interrupted replay left,
        and the tables ``drop_unmarked`` names among those named so that readmodel did not
        mark (an older readmodel's); :attr:`left_alone` lists the others."""
        try:
            with sql_replay_lock(self.store, self.projection.name) as self._lock:
                return self._cleanup(unmarked=drop_unmarked)
        finally:
            self._lock = None
            self.shadow.warned.clear()
